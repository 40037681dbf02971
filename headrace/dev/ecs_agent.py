"""The ECS container agent's task-protection endpoint, played locally for the dev stack's workers.

On ECS every container finds the agent at `$ECS_AGENT_URI` (`http://169.254.170.2/api/<task>`)
and sets its task's scale-in protection with `PUT $ECS_AGENT_URI/task-protection/v1/state`.
The dev stack gives each worker it starts a URI of its own on this server, records what each
asked, and answers as the agent does (`{"protection": {...}}`, or `{"error": {...}}` for a bad
request), so the worker's code path (worker/task_protection.py) runs in dev and in tests, and
the local autoscaler leaves a protected worker alone, as ECS scale-in does.

The server runs on its own event loop in a thread of the process that owns the stack.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

DEFAULT_MINUTES = 120  # the agent's default when a request names no expiry
MAX_MINUTES = 2880


@dataclass(frozen=True)
class ProtectionRequest:
    """One PUT a task made."""

    at: float  # time.time() when it arrived
    enabled: bool
    expires_in_minutes: int | None


@dataclass
class _TaskState:
    requests: list[ProtectionRequest]
    expires_at: float | None = None  # while protected


class LocalEcsAgent:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._tasks: dict[str, _TaskState] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- what the stack and the tests use -------------------------------------------------

    def uri(self, task: str) -> str:
        """The ECS_AGENT_URI of a task."""
        return f"http://{self.host}:{self.port}/api/{task}"

    def requests(self, task: str) -> list[ProtectionRequest]:
        with self._lock:
            state = self._tasks.get(task)
            return list(state.requests) if state else []

    def protected(self, task: str) -> bool:
        """Whether the task's protection is on and has not lapsed."""
        with self._lock:
            state = self._tasks.get(task)
            return bool(state and state.expires_at is not None and state.expires_at > time.time())

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ecs-agent")
        self._thread.daemon = True
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.put("/api/{task}/task-protection/v1/state", self._put),
                web.get("/api/{task}/task-protection/v1/state", self._get),
                # Not the agent's: what every task asked, for a process other than the stack's.
                web.get("/requests", self._all_requests),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    # ---- the agent's answers -----------------------------------------------------------------

    async def _put(self, request: web.Request) -> web.Response:
        task = request.match_info["task"]
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(task, "InvalidParameterException", "Unable to decode request body")
        enabled = body.get("ProtectionEnabled") if isinstance(body, dict) else None
        minutes = body.get("ExpiresInMinutes") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            return _error(task, "InvalidParameterException", "Invalid request: no enabled flag")
        whole = isinstance(minutes, int) and not isinstance(minutes, bool)
        if minutes is not None and not (whole and 1 <= minutes <= MAX_MINUTES):
            return _error(task, "InvalidParameterException", "ExpiresInMinutes out of range")
        now = time.time()
        with self._lock:
            state = self._tasks.setdefault(task, _TaskState(requests=[]))
            state.requests.append(ProtectionRequest(now, enabled, minutes))
            state.expires_at = now + 60 * (minutes or DEFAULT_MINUTES) if enabled else None
        return self._answer(task)

    async def _get(self, request: web.Request) -> web.Response:
        return self._answer(request.match_info["task"])

    async def _all_requests(self, request: web.Request) -> web.Response:
        with self._lock:
            listed = {
                task: [asdict(r) for r in state.requests] for task, state in self._tasks.items()
            }
        return web.json_response(listed)

    def _answer(self, task: str) -> web.Response:
        with self._lock:
            state = self._tasks.get(task)
            expires_at = state.expires_at if state else None
        live = expires_at is not None and expires_at > time.time()
        protection: dict[str, Any] = {
            "ExpirationDate": _iso(expires_at) if live and expires_at else None,
            "ProtectionEnabled": live,
            "TaskArn": _task_arn(task),
        }
        return web.json_response({"protection": protection, "requestID": _request_id()})


def _error(task: str, code: str, message: str) -> web.Response:
    body = {"error": {"Arn": _task_arn(task), "Code": code, "Message": message}}
    return web.json_response(body, status=400)


def _task_arn(task: str) -> str:
    return f"arn:aws:ecs:us-east-1:000000000000:task/headrace-dev/{task}"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="seconds")


def _request_id() -> str:
    return f"local-{time.time_ns()}"
