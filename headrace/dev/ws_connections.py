"""Open WebSocket connections of the local gateway, and the @connections management API on them.

`POST|GET|DELETE /{stage}/@connections/{connection_id}` as API Gateway serves it to the
`apigatewaymanagementapi` client (rest-json): errors carry the `x-amzn-ErrorType` header and a
JSON `{"message": ...}` body, so botocore raises the modeled exception, e.g. a 410 with
`x-amzn-ErrorType: GoneException` is `client.exceptions.GoneException`. No SigV4 check.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from aiohttp import web

from headrace.dev.apigw import new_request_id
from headrace.dev.ws_events import ConnectionInfo, connection_description

DELETED = (1000, "Connection deleted")  # what a DELETE @connections closes the socket with


class ConnectionGone(Exception):
    """The connection is closing or closed: nothing more can be sent on it (410 Gone)."""


class Connection:
    """One open WebSocket: what @connections reports of it, and serialized sends."""

    def __init__(
        self, info: ConnectionInfo, ws: web.WebSocketResponse[Literal[True]], opened: float
    ) -> None:
        self.info = info
        self.ws = ws
        self.opened = opened  # loop time
        self.last_active = opened  # loop time of the last frame either way
        self.last_active_at = info.connected_at
        self.gone = False  # closing or closed: sends fail, @connections answers 410
        self.server_close: tuple[int, str] | None = None  # (code, reason) when we closed it
        self.watchdog: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()  # set once $disconnect has been fired
        self._send_lock = asyncio.Lock()

    def touch(self) -> None:
        self.last_active = asyncio.get_running_loop().time()
        self.last_active_at = datetime.now(UTC)

    async def send(self, data: str | bytes) -> None:
        """One frame (text for str, binary for bytes); frames never interleave.

        Raises ConnectionGone once the connection is closing or closed."""
        async with self._send_lock:
            if self.gone or self.ws.closed:
                raise ConnectionGone(self.info.connection_id)
            try:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(data)
            except ConnectionError as exc:
                raise ConnectionGone(self.info.connection_id) from exc
            self.touch()

    async def close_socket(self, code: int, reason: str) -> None:
        async with self._send_lock:  # let a frame being written finish first
            await self.ws.close(code=code, message=reason.encode("utf-8"))


class ConnectionRegistry(Protocol):
    """What the management API needs of the WebSocket API (LocalWebSocketApi)."""

    max_message_bytes: int

    def connection(self, connection_id: str) -> Connection | None: ...

    def begin_close(self, conn: Connection, code: int, reason: str, *, why: str) -> bool: ...


logger = logging.getLogger("headrace.gateway.ws")


def management_routes(path: str, registry: ConnectionRegistry) -> list[web.RouteDef]:
    """The @connections routes at `path` (with a {connection_id} placeholder)."""

    async def post(request: web.Request) -> web.Response:
        return await _serve(request, registry, _post)

    async def get(request: web.Request) -> web.Response:
        return await _serve(request, registry, _get)

    async def delete(request: web.Request) -> web.Response:
        return await _serve(request, registry, _delete)

    return [
        web.post(path, post),
        web.get(path, get, allow_head=False),
        web.delete(path, delete),
    ]


async def _serve(
    request: web.Request, registry: ConnectionRegistry, operation: Any
) -> web.Response:
    started = time.perf_counter()
    request_id = new_request_id()
    connection_id = request.match_info["connection_id"]
    conn = registry.connection(connection_id)
    if conn is None:
        response = _error(410, "GoneException", f"connection {connection_id} is gone")
    else:
        response = await operation(request, registry, conn)
    response.headers["x-amzn-RequestId"] = request_id
    response.headers["apigw-requestid"] = request_id
    fields = {
        "ws": f"@connections {request.method}",
        "connectionId": connection_id,
        "status": response.status,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    logger.info(
        json.dumps({**fields, "requestId": request_id}), extra={**fields, "request_id": request_id}
    )
    return response


async def _post(
    request: web.Request, registry: ConnectionRegistry, conn: Connection
) -> web.Response:
    data = await request.read()
    if len(data) > registry.max_message_bytes:
        return _error(413, "PayloadTooLargeException", "Message too long")
    frame: str | bytes
    try:
        frame = data.decode("utf-8")
    except UnicodeDecodeError:
        frame = data
    try:
        await conn.send(frame)
    except ConnectionGone:
        return _error(410, "GoneException", f"connection {conn.info.connection_id} is gone")
    return web.Response(status=200)


async def _get(
    request: web.Request, registry: ConnectionRegistry, conn: Connection
) -> web.Response:
    return web.json_response(connection_description(conn.info, conn.last_active_at))


async def _delete(
    request: web.Request, registry: ConnectionRegistry, conn: Connection
) -> web.Response:
    if not registry.begin_close(conn, *DELETED, why="deleted"):
        return _error(410, "GoneException", f"connection {conn.info.connection_id} is gone")
    return web.Response(status=204)


def _error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": error_type}
    )
