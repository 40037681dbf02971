"""Lambda invocations for the local WebSocket API: handlers in a thread pool, with timeouts.

What the Lambda runtime and API Gateway do around one invocation: the event crosses as JSON,
the handler runs in a pool thread with a LambdaContext, the result is marshalled as the runtime
does, the function's Timeout and the integration timeout (29 s) are enforced. `$disconnect` is
fired and forgotten, as API Gateway does (its failures are logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from headrace.dev.apigw import wire_text
from headrace.dev.gateway import DEFAULT_MEMORY_MB, Handler, HandlerResolver
from headrace.dev.lambda_context import LambdaContext, marshal_result
from infra.template import WebSocketRoute

logger = logging.getLogger("headrace.gateway.ws")

INTEGRATION_TIMEOUT_SECONDS = 29.0  # WebSocket API integration timeout quota
Failure = Literal["error", "function_timeout", "integration_timeout"]


@dataclass(frozen=True)
class Outcome:
    """A finished invocation: the response payload (JSON bytes), or why there is none."""

    payload: bytes = b""
    failure: Failure | None = None


class LambdaFunctions:
    """Calls route handlers like Lambda would, each resolved once (a warm container)."""

    def __init__(
        self,
        resolver: HandlerResolver,
        *,
        max_concurrency: int = 32,
        integration_timeout_seconds: float = INTEGRATION_TIMEOUT_SECONDS,
        memory_mb: Mapping[str, int] | None = None,
    ) -> None:
        self._resolver = resolver
        self._max_concurrency = max_concurrency
        self.integration_timeout_seconds = min(
            integration_timeout_seconds, INTEGRATION_TIMEOUT_SECONDS
        )
        self._memory_mb = dict(memory_mb or {})
        self._handlers: dict[str, Handler] = {}
        self._handlers_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._fired: set[asyncio.Future[bytes]] = set()

    def resolve(self, handler: str) -> Handler:
        with self._handlers_lock:
            func = self._handlers.get(handler)
            if func is None:
                func = self._handlers[handler] = self._resolver(handler)
            return func

    def resolve_all(self, routes: Iterable[WebSocketRoute]) -> None:
        for route in routes:
            self.resolve(route.handler)

    def _call(self, handler: str, event_json: str, context: LambdaContext) -> bytes:
        """Runs in a pool thread: what the Lambda runtime does around one invocation."""
        return marshal_result(self.resolve(handler)(json.loads(event_json), context))

    def _submit(self, route: WebSocketRoute, event: dict[str, Any]) -> asyncio.Future[bytes]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="ws")
        memory = self._memory_mb.get(route.function_logical_id, DEFAULT_MEMORY_MB)
        context = LambdaContext(
            function_name=route.function_logical_id,
            memory_limit_in_mb=str(memory),
            timeout_seconds=route.timeout_seconds,
        )
        event_json = wire_text(json.dumps(event, ensure_ascii=False))
        return asyncio.get_running_loop().run_in_executor(
            self._executor, self._call, route.handler, event_json, context
        )

    async def invoke(self, route: WebSocketRoute, event: dict[str, Any], rid: str) -> Outcome:
        """Call the route's handler and wait for it, up to its Timeout or the integration's."""
        future = self._submit(route, event)
        wait = min(route.timeout_seconds, self.integration_timeout_seconds)
        done, _ = await asyncio.wait({future}, timeout=wait)
        if not done:
            future.cancel()  # only stops a call still queued; a running one finishes unheard
            function_timeout = route.timeout_seconds < self.integration_timeout_seconds
            logger.error(
                "%s: %s timed out after %.2f seconds (requestId %s)",
                route.function_logical_id,
                "Task" if function_timeout else "integration",
                wait,
                rid,
            )
            failure: Failure = "function_timeout" if function_timeout else "integration_timeout"
            return Outcome(failure=failure)
        try:
            return Outcome(payload=future.result())
        except (Exception, SystemExit):
            logger.exception(
                "%s (%s) raised (requestId %s)", route.function_logical_id, route.handler, rid
            )
            return Outcome(failure="error")

    def fire(self, route: WebSocketRoute, event: dict[str, Any], rid: str) -> None:
        """Call the handler without waiting for it (never awaits); a failure is logged."""
        future = self._submit(route, event)
        self._fired.add(future)

        def done(f: asyncio.Future[bytes]) -> None:
            self._fired.discard(f)
            if not f.cancelled() and f.exception() is not None:
                logger.error(
                    "%s (%s) raised (requestId %s)",
                    route.function_logical_id,
                    route.handler,
                    rid,
                    exc_info=f.exception(),
                )

        future.add_done_callback(done)

    async def drain(self, grace_seconds: float) -> None:
        """Wait (up to grace_seconds) for the calls fired and not finished yet."""
        if self._fired:
            await asyncio.wait(set(self._fired), timeout=grace_seconds)

    def shutdown(self) -> None:
        """Stop the threads once idle; queued calls are dropped (a fresh pool on next use)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
