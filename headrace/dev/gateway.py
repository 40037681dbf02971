"""The local gateway: plays API Gateway (HTTP API, payload format 2.0) in front of the handlers.

It serves the HttpApi routes of template.yaml over real HTTP and calls each function's handler
in-process, in a thread pool, with the event API Gateway would send, then maps the result the
way API Gateway does (status codes, 404/413/500/503 bodies included).

    gateway = LocalGateway.from_template()
    base_url = await gateway.start(port=0)  # "http://127.0.0.1:<bound port>"
    ...
    await gateway.stop()
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from headrace.dev.apigw import (
    INTERNAL_ERROR,
    NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    HttpResponse,
    MalformedResponseError,
    build_event,
    forwarding_headers,
    map_response,
    new_request_id,
    wire_text,
)
from headrace.dev.http_errors import JsonErrorAppRunner
from headrace.dev.lambda_context import LAMBDA_PAYLOAD_LIMIT_BYTES, LambdaContext, marshal_result
from headrace.dev.routes import RouteMatch, RouteTable
from infra.template import TEMPLATE_PATH, HttpRoute, http_routes, load_template, resources_of_type

logger = logging.getLogger("headrace.gateway")

Handler = Callable[[dict[str, Any], Any], Any]
HandlerResolver = Callable[[str], Handler]
# Serves a request of a route itself when it should stream (None: the route's handler answers).
StreamingRoute = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API payload quota
INTEGRATION_TIMEOUT_SECONDS = 30.0  # HTTP API integration timeout quota
DEFAULT_MEMORY_MB = 128


def import_handler(handler: str) -> Handler:
    """Resolve a template `Handler` ("package.module.function") like the Lambda runtime."""
    module_name, _, attr = handler.rpartition(".")
    if not module_name:
        raise ValueError(f"handler {handler!r} is not 'module.function'")
    func = getattr(importlib.import_module(module_name), attr)
    if not callable(func):
        raise TypeError(f"handler {handler!r} is not callable")
    return func  # type: ignore[no-any-return]


class LocalGateway:
    """API Gateway HTTP API in front of in-process Lambda handlers.

    routes: the HttpApi routes (infra.template.http_routes). resolver: handler string -> callable
    (default: import it). extra_routes: more aiohttp routes served by the same app, matched before
    the API routes (e.g. /openapi.json). memory_mb: MemorySize per function logical id.
    streaming_routes: route key ("POST /v1/chat/completions") -> what serves a request of the
    route that asks to stream, which the deployed route serves from a streaming function.
    """

    def __init__(
        self,
        routes: Iterable[HttpRoute],
        *,
        resolver: HandlerResolver = import_handler,
        extra_routes: Sequence[web.AbstractRouteDef] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        integration_timeout_seconds: float = INTEGRATION_TIMEOUT_SECONDS,
        max_concurrency: int = 32,
        memory_mb: Mapping[str, int] | None = None,
        lambda_payload_limit_bytes: int = LAMBDA_PAYLOAD_LIMIT_BYTES,
        streaming_routes: Mapping[str, StreamingRoute] | None = None,
    ) -> None:
        self.routes = RouteTable(routes)
        self._resolver = resolver
        self._extra_routes = list(extra_routes)
        self.max_body_bytes = max_body_bytes
        self.integration_timeout_seconds = min(
            integration_timeout_seconds, INTEGRATION_TIMEOUT_SECONDS
        )
        self._max_concurrency = max_concurrency
        self._memory_mb = dict(memory_mb or {})
        self._payload_limit = lambda_payload_limit_bytes
        self._streaming_routes = dict(streaming_routes or {})
        self._handlers: dict[str, Handler] = {}
        self._handlers_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    @classmethod
    def from_template(cls, path: Path = TEMPLATE_PATH, **kwargs: Any) -> LocalGateway:
        """A gateway for the HttpApi routes declared in a SAM template (template.yaml)."""
        template = load_template(path)
        default_memory = template.get("Globals", {}).get("Function", {}).get("MemorySize")
        memory: dict[str, int] = {}
        for logical_id, res in resources_of_type(template, "AWS::Serverless::Function").items():
            size = res.get("Properties", {}).get("MemorySize", default_memory)
            if isinstance(size, int):
                memory[logical_id] = size
        kwargs.setdefault("memory_mb", memory)
        return cls(http_routes(template), **kwargs)

    # --- handlers

    def resolve(self, handler: str) -> Handler:
        """The callable for a handler string, resolved once (like a warm Lambda container)."""
        with self._handlers_lock:
            func = self._handlers.get(handler)
            if func is None:
                func = self._handlers[handler] = self._resolver(handler)
            return func

    def resolve_all(self) -> None:
        """Import every route's handler now, to fail fast on a broken one (optional)."""
        for route in self.routes.routes:
            self.resolve(route.handler)

    def _invoke(self, route: HttpRoute, event_json: str, context: LambdaContext) -> bytes:
        """Runs in a pool thread: what the Lambda runtime does around one invocation."""
        func = self.resolve(route.handler)
        return marshal_result(func(json.loads(event_json), context))

    # --- aiohttp

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.add_routes(self._extra_routes)
        # Any path, newlines included (`.` stops at one): every request gets API Gateway's
        # answer, never aiohttp's plain-text 404.
        app.router.add_route("*", r"/{path:[\s\S]*}", self._handle)
        app.cleanup_ctx.append(self._lambda_threads)
        return app

    async def _lambda_threads(self, app: web.Application) -> AsyncIterator[None]:
        """The pool handlers run in, for the life of the app (make_app works without start)."""
        executor = ThreadPoolExecutor(self._max_concurrency, thread_name_prefix="lambda")
        self._executor = executor
        yield
        self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); returns the base URL with the bound port."""
        if self._runner is not None:
            raise RuntimeError("gateway already started")
        runner = JsonErrorAppRunner(self.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{url_host}:{bound_port}"
        logger.info("local gateway: %d routes on %s", len(self.routes.routes), self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Stop serving. Handler calls still running (timed out ones) finish in their threads."""
        runner, self._runner, self.base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LocalGateway:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = new_request_id()
        match = self.routes.match(request.method, request.path)
        streaming = self._streaming_routes.get(match.route_key) if match else None
        if streaming is not None and (streamed := await streaming(request)) is not None:
            return streamed
        result = await self._serve(request, match, request_id)
        headers = [*result.headers, ("apigw-requestid", request_id)]
        no_body = result.status in (204, 304) or 100 <= result.status < 200
        response = web.Response(
            status=result.status,
            headers=headers,
            body=None if no_body else result.body,
        )
        fields = {
            "method": request.method,
            "path": wire_text(request.path),
            "status": result.status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "requestId": request_id,
            "routeKey": match.route_key if match else None,
        }
        extra = {k: v for k, v in fields.items() if k != "requestId"}
        logger.info(json.dumps(fields), extra={**extra, "request_id": request_id})
        return response

    async def _serve(
        self, request: web.Request, match: RouteMatch | None, request_id: str
    ) -> HttpResponse:
        if match is None:
            return NOT_FOUND
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return TOO_LARGE
        route = match.route
        event = _http_api_event(request, match, body, request_id)
        event_json = wire_text(json.dumps(event, ensure_ascii=False))
        if len(event_json.encode("utf-8")) > self._payload_limit:
            logger.error("%s: event exceeds the Lambda request payload limit", route.handler)
            return TOO_LARGE
        memory = self._memory_mb.get(route.function_logical_id, DEFAULT_MEMORY_MB)
        context = LambdaContext(
            function_name=route.function_logical_id,
            memory_limit_in_mb=str(memory),
            timeout_seconds=route.timeout_seconds,
        )
        # The function gives up at its own Timeout (Lambda: an error, so 500); API Gateway gives
        # up at its integration timeout (503), whichever comes first.
        function_times_out = route.timeout_seconds < self.integration_timeout_seconds
        wait = min(route.timeout_seconds, self.integration_timeout_seconds)
        if self._executor is None:
            raise RuntimeError("the gateway's app is not running")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._invoke, route, event_json, context)
        done, _ = await asyncio.wait({future}, timeout=wait)
        if not done:
            future.cancel()  # only stops a call still queued; a running one finishes unheard
            if function_times_out:
                logger.error(
                    "%s: Task timed out after %.2f seconds (requestId %s)",
                    route.function_logical_id,
                    route.timeout_seconds,
                    request_id,
                )
                return INTERNAL_ERROR
            logger.error(
                "%s: integration timed out after %.2f seconds (requestId %s)",
                route.function_logical_id,
                wait,
                request_id,
            )
            return UNAVAILABLE
        try:
            payload = future.result()
        except (Exception, SystemExit):
            logger.exception(
                "%s (%s) raised (requestId %s)",
                route.function_logical_id,
                route.handler,
                request_id,
            )
            return INTERNAL_ERROR
        if len(payload) > self._payload_limit:
            logger.error("%s: response exceeds the Lambda payload limit", route.handler)
            return INTERNAL_ERROR
        try:
            return map_response(payload)
        except MalformedResponseError as exc:
            logger.error("%s: malformed Lambda proxy response: %s", route.handler, exc)
            return INTERNAL_ERROR


def _http_api_event(
    request: web.Request, match: RouteMatch, body: bytes, request_id: str
) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway would send the route's function for `request`."""
    source_ip = request.remote or "127.0.0.1"
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return build_event(
        match=match,
        method=request.method,
        path=request.path,
        raw_query=request.raw_path.partition("?")[2].partition("#")[0],
        headers=forwarding_headers(
            request.headers.items(),
            source_ip=source_ip,
            port=sockname[1] if isinstance(sockname, tuple) else None,
            scheme=request.scheme,
        ),
        body=body,
        source_ip=source_ip,
        request_id=request_id,
        now=datetime.now(UTC),
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
    )
