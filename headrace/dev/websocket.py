"""The local gateway's WebSocket side: plays an API Gateway WebSocket API and its @connections API.

`sam local` serves no WebSocket APIs. This serves the WebSocket routes of template.yaml on the
local gateway's port: `GET /{stage}` upgrades (the `$connect` handler may refuse it), each frame
goes to the route its `action` selects (else `$default`) with the event API Gateway would send,
two-way routes send the handler's return body back, and `$disconnect` runs when the connection
ends. `POST|GET|DELETE /{stage}/@connections/{id}` is the management API that boto3's
`apigatewaymanagementapi` client calls (`endpoint_url="http://HOST:PORT/{stage}"`); a connection
that is gone answers 410, which botocore raises as `GoneException`.

    ws_api = LocalWebSocketApi.from_template()
    gateway = LocalGateway.from_template(extra_routes=ws_api.route_defs())
    await gateway.start(port=8080)  # ws://127.0.0.1:8080/ws, @connections under it
    ...
    await ws_api.close_all()  # before gateway.stop(): open sockets would hold the shutdown up
    await gateway.stop()
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import WSMsgType, web

from headrace.dev.apigw import (
    HttpResponse,
    MalformedResponseError,
    map_response,
    message_response,
    new_request_id,
    wire_text,
)
from headrace.dev.gateway import Handler, HandlerResolver, import_handler
from headrace.dev.ws_connections import Connection, ConnectionGone, management_routes
from headrace.dev.ws_events import (
    CONNECT,
    DEFAULT,
    DISCONNECT,
    INTERNAL_ERROR_MESSAGE,
    NO_ROUTE_MESSAGE,
    TIMED_OUT_MESSAGE,
    ConnectionInfo,
    build_connect_event,
    build_disconnect_event,
    build_message_event,
    connect_headers,
    gateway_message,
    new_connection_id,
    route_response,
    route_selection_key,
    select_route,
)
from headrace.dev.ws_invoke import INTEGRATION_TIMEOUT_SECONDS, LambdaFunctions, Outcome
from infra.template import (
    TEMPLATE_PATH,
    WebSocketRoute,
    function_memory_mb,
    load_template,
    websocket_route_selection_expression,
    websocket_routes,
    websocket_stage,
)

logger = logging.getLogger("headrace.gateway.ws")

MAX_MESSAGE_BYTES = 128 * 1024  # WebSocket API message quota
IDLE_TIMEOUT_SECONDS = 600.0
MAX_CONNECTION_SECONDS = 7200.0
GOING_AWAY = (1001, "Going away")


class LocalWebSocketApi:
    """API Gateway WebSocket API in front of in-process Lambda handlers, as aiohttp routes.

    routes: infra.template.websocket_routes. resolver: handler string -> callable. A message
    over max_message_bytes closes the connection with 1009, as API Gateway does (oversize_reply
    is unused). Idle for idle_timeout_seconds or open for max_connection_seconds, a connection
    closes (1001 "Going away"). Handlers run in a pool of max_concurrency threads of its own.
    """

    def __init__(
        self,
        routes: Iterable[WebSocketRoute],
        *,
        stage: str = "ws",
        resolver: HandlerResolver = import_handler,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS,
        max_connection_seconds: float = MAX_CONNECTION_SECONDS,
        oversize_reply: Callable[[str, str], dict[str, Any]] | None = None,  # unused
        max_concurrency: int = 32,
        route_selection_expression: str = "$request.body.action",
        integration_timeout_seconds: float = INTEGRATION_TIMEOUT_SECONDS,
        memory_mb: Mapping[str, int] | None = None,
    ) -> None:
        self.routes: dict[str, WebSocketRoute] = {}
        for route in routes:
            if route.route_key in self.routes:
                raise ValueError(f"duplicate WebSocket route {route.route_key!r}")
            self.routes[route.route_key] = route
        self.stage = stage
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_seconds = idle_timeout_seconds
        self.max_connection_seconds = max_connection_seconds
        self._selection_key = route_selection_key(route_selection_expression)
        self.functions = LambdaFunctions(
            resolver,
            max_concurrency=max_concurrency,
            integration_timeout_seconds=integration_timeout_seconds,
            memory_mb=memory_mb,
        )
        self._connections: dict[str, Connection] = {}  # open: @connections can reach them
        self._live: set[Connection] = set()  # until their $disconnect has been fired
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    def from_template(cls, path: Path = TEMPLATE_PATH, **kwargs: Any) -> LocalWebSocketApi:
        """The WebSocket API declared in a SAM template (template.yaml)."""
        template = load_template(path)
        kwargs.setdefault("stage", websocket_stage(template))
        kwargs.setdefault(
            "route_selection_expression", websocket_route_selection_expression(template)
        )
        kwargs.setdefault("memory_mb", function_memory_mb(template))
        return cls(websocket_routes(template), **kwargs)

    def route_defs(self) -> list[web.RouteDef]:
        """The aiohttp routes: `GET /{stage}` (upgrade) and `/{stage}/@connections/{id}`."""
        return [
            web.get(f"/{self.stage}", self._handle_upgrade, allow_head=False),
            *management_routes(f"/{self.stage}/@connections/{{connection_id}}", self),
        ]

    def websocket_url(self, base_url: str) -> str:
        """ws://HOST:PORT/{stage} for the gateway's http://HOST:PORT."""
        return base_url.replace("http", "ws", 1).rstrip("/") + f"/{self.stage}"

    def callback_url(self, base_url: str) -> str:
        """The @connections endpoint_url for boto3's apigatewaymanagementapi client."""
        return base_url.rstrip("/") + f"/{self.stage}"

    def connection_ids(self) -> list[str]:
        return list(self._connections)

    def connection(self, connection_id: str) -> Connection | None:
        """An open connection (None once it is closing or closed: @connections answers 410)."""
        conn = self._connections.get(connection_id)
        return conn if conn is not None and not conn.gone else None

    # --- handlers

    def resolve(self, handler: str) -> Handler:
        """The callable for a handler string, resolved once (like a warm Lambda container)."""
        return self.functions.resolve(handler)

    def resolve_all(self) -> None:
        """Import every route's handler now, to fail fast on a broken one (optional)."""
        self.functions.resolve_all(self.routes.values())

    # --- connections

    async def _handle_upgrade(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        if self._closed:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        if not web.WebSocketResponse().can_prepare(request).ok:
            return web.json_response(
                {"message": "Upgrade Required"}, status=426, headers={"Upgrade": "websocket"}
            )
        now = datetime.now(UTC)
        request_id = new_request_id()
        source_ip = request.remote or "127.0.0.1"
        info = ConnectionInfo(
            connection_id=new_connection_id(),
            stage=self.stage,
            domain_name=wire_text(request.headers.get("Host", request.host)),
            source_ip=source_ip,
            user_agent=wire_text(request.headers.get("User-Agent", "")),
            connected_at=now,
        )
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        headers = connect_headers(
            request.headers.items(),
            source_ip=source_ip,
            port=sockname[1] if isinstance(sockname, tuple) else None,
            scheme=request.scheme,
        )
        event = build_connect_event(
            info,
            headers=headers,
            query=request.rel_url.query.items(),
            request_id=request_id,
            now=now,
        )
        protocols: tuple[str, ...] = ()
        route = self.routes.get(CONNECT)
        if route is not None:
            verdict = _connect_verdict(await self.functions.invoke(route, event, request_id), route)
            if not 200 <= verdict.status < 300:
                self._log(
                    "refused", info, requestId=request_id, status=verdict.status, ms=_ms(started)
                )
                return web.Response(
                    status=verdict.status,
                    headers=[*verdict.headers, ("x-amzn-RequestId", request_id)],
                    body=verdict.body,
                )
            protocols = tuple(
                v for k, v in verdict.headers if k.lower() == "sec-websocket-protocol"
            )
            if self._closed:  # shut down while $connect ran
                return web.json_response({"message": "Service Unavailable"}, status=503)
        ws: web.WebSocketResponse[Literal[True]] = web.WebSocketResponse(
            # aiohttp closes with 1009 at max_msg_size bytes: one more than the largest allowed.
            protocols=protocols,
            max_msg_size=self.max_message_bytes + 1,
        )
        await ws.prepare(request)
        conn = Connection(info, ws, asyncio.get_running_loop().time())
        self._connections[info.connection_id] = conn
        self._live.add(conn)
        conn.watchdog = asyncio.create_task(self._watch(conn))
        self._log("connect", info, requestId=request_id, status=101, ms=_ms(started))
        code, reason = 1006, "Connection lost"
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    conn.touch()
                    self._spawn(self._answer(conn, msg.data))
                elif msg.type is WSMsgType.CLOSE:
                    code, reason = (msg.data or 1005), (msg.extra or "")
                    break
                elif msg.type is WSMsgType.ERROR:
                    code, reason = (ws.close_code or 1006), str(msg.data)
                    break
                else:  # CLOSING (we close it) or CLOSED
                    break
        finally:
            self._finish(conn, code, reason)
        return ws

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, conn: Connection) -> None:
        """Close an idle connection, or one past the maximum duration (1001 Going away)."""
        loop = asyncio.get_running_loop()
        while not conn.gone:
            idle_at = conn.last_active + self.idle_timeout_seconds
            end_at = conn.opened + self.max_connection_seconds
            now = loop.time()
            if now >= min(idle_at, end_at):
                self.begin_close(
                    conn, *GOING_AWAY, why="idle" if now >= idle_at else "max-duration"
                )
                return
            await asyncio.sleep(min(idle_at, end_at) - now)

    def begin_close(self, conn: Connection, code: int, reason: str, *, why: str) -> bool:
        """Close a connection from the server side; False if it was already closing."""
        if conn.gone:
            return False
        conn.gone = True
        conn.server_close = (code, reason)
        self._connections.pop(conn.info.connection_id, None)
        self._log("close", conn.info, code=code, reason=reason, why=why)
        self._spawn(conn.close_socket(code, reason))
        return True

    def _finish(self, conn: Connection, code: int, reason: str) -> None:
        """The socket is done: forget it and fire $disconnect (once; never awaits)."""
        conn.gone = True
        if self._connections.get(conn.info.connection_id) is conn:
            del self._connections[conn.info.connection_id]
        if conn.watchdog is not None:
            conn.watchdog.cancel()
        code, reason = conn.server_close or (code, reason)
        request_id = new_request_id()
        self._log("disconnect", conn.info, requestId=request_id, code=code, reason=reason)
        route = self.routes.get(DISCONNECT)
        if route is not None:
            event = build_disconnect_event(
                conn.info,
                status_code=code,
                reason=reason,
                request_id=request_id,
                now=datetime.now(UTC),
            )
            self.functions.fire(route, event, request_id)
        self._live.discard(conn)
        conn.finished.set()

    async def close_all(self, grace_seconds: float = 5.0) -> None:
        """Shut down: close every socket (1001), fire their $disconnect, wait for those calls
        (up to `grace_seconds`), then stop the handler threads. New upgrades answer 503."""
        self._closed = True
        for conn in list(self._connections.values()):
            self.begin_close(conn, *GOING_AWAY, why="shutdown")
        waiting = [asyncio.ensure_future(c.finished.wait()) for c in self._live]
        if waiting:
            await asyncio.wait(waiting, timeout=grace_seconds)
            for w in waiting:
                w.cancel()
        await self.functions.drain(grace_seconds)
        if self._tasks:  # closing handshakes, frames whose answer can no longer be sent
            await asyncio.wait(set(self._tasks), timeout=min(grace_seconds, 1.0))
        for task in list(self._tasks):
            task.cancel()
        self.functions.shutdown()

    # --- frames

    async def _answer(self, conn: Connection, data: str | bytes) -> None:
        """Every frame gets an answer: where the gateway itself fails, API Gateway's own."""
        try:
            await self._on_frame(conn, data)
        except Exception:
            logger.exception("frame from %s: the gateway failed", conn.info.connection_id)
            await self._reply(conn, _message(INTERNAL_ERROR_MESSAGE, conn.info, new_request_id()))

    async def _on_frame(self, conn: Connection, data: str | bytes) -> None:
        started = time.perf_counter()
        info = conn.info
        request_id = new_request_id()
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        fields: dict[str, Any] = {"requestId": request_id, "bytes": size}
        key = (
            DEFAULT
            if isinstance(data, bytes)
            else select_route(data, self.routes, self._selection_key)
        )
        route = self.routes.get(key)
        if route is None:
            await self._reply(conn, _message(NO_ROUTE_MESSAGE, info, request_id))
            self._log("message", info, outcome="no-route", ms=_ms(started), **fields)
            return
        event = build_message_event(
            info, route_key=key, data=data, request_id=request_id, now=datetime.now(UTC)
        )
        outcome = await self.functions.invoke(route, event, request_id)
        reply: str | bytes | None = None
        if outcome.failure == "integration_timeout":
            reply = _message(TIMED_OUT_MESSAGE, info, request_id)
        elif outcome.failure is not None:
            reply = _message(INTERNAL_ERROR_MESSAGE, info, request_id)
        elif route.two_way:
            try:
                reply = route_response(outcome.payload)
            except MalformedResponseError as exc:
                logger.error("%s: malformed route response: %s", route.handler, exc)
                reply = _message(INTERNAL_ERROR_MESSAGE, info, request_id)
        if reply is not None:
            await self._reply(conn, reply)
        result = outcome.failure or "ok"
        self._log("message", info, routeKey=key, outcome=result, ms=_ms(started), **fields)

    async def _reply(self, conn: Connection, data: str | bytes) -> None:
        try:
            await conn.send(data)
        except ConnectionGone:
            logger.debug("reply to %s dropped: connection gone", conn.info.connection_id)

    def _log(
        self, what: str, info: ConnectionInfo, level: int = logging.INFO, **fields: Any
    ) -> None:
        line = {"ws": what, "connectionId": info.connection_id, **fields}
        extra = {k: v for k, v in line.items() if k != "requestId"}
        logger.log(level, json.dumps(line), extra={**extra, "request_id": fields.get("requestId")})


def _connect_verdict(outcome: Outcome, route: WebSocketRoute) -> HttpResponse:
    """The $connect integration's answer as the HTTP response to the upgrade (2xx: accept)."""
    if outcome.failure == "integration_timeout":
        return message_response(504, TIMED_OUT_MESSAGE)
    if outcome.failure is not None:
        return message_response(500, INTERNAL_ERROR_MESSAGE)
    try:
        return map_response(outcome.payload)
    except MalformedResponseError as exc:
        logger.error("%s: malformed $connect response: %s", route.handler, exc)
        return message_response(500, INTERNAL_ERROR_MESSAGE)


def _message(message: str, info: ConnectionInfo, request_id: str) -> str:
    return json.dumps(gateway_message(message, info.connection_id, request_id))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
