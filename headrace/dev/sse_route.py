"""The local gateway's streaming route: aiohttp glue around `headrace.api.sse`.

Every answer before the stream starts is Headrace's own JSON `{"detail": ...}`, aiohttp's
plain-text ones (a body over the limit, an error of ours) included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from headrace.api import sse
from headrace.api.services import ApiServices, default_services
from headrace.core import routes
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.dev.apigw import wire_text
from headrace.dev.gateway import MAX_BODY_BYTES

logger = logging.getLogger("headrace.gateway")

_CLIENT_CHECK_SECONDS = 0.1


def route_defs() -> list[web.RouteDef]:
    return [web.post(routes.COMPLETIONS_STREAM, completions_stream)]


async def completions_stream(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body: over the {MAX_BODY_BYTES // 2**20} MB payload limit")
    # As the HTTP routes get them (headrace.dev.apigw): names lower-cased, UTF-8 only.
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), wire_text(value))
    try:
        services = await asyncio.to_thread(default_services)
        opened = await sse.start(
            services,
            headers=headers,
            body=body,
            query_model=request.query.get("model_endpoint_name"),
        )
    except HeadraceError as e:
        return _error(e.status_code, e.detail)
    except Exception:
        logger.exception("the streaming route failed before streaming")
        return _error(500, "internal error")
    response = web.StreamResponse(headers=opened.headers)
    await response.prepare(request)
    with request_context(opened.request_id):
        relay = asyncio.create_task(_relay(services, opened, response))
        if await _until_done_or_gone(request, relay):
            await response.write_eof()
        else:
            logger.info("stream client went away; stopped following the job, which goes on")
    return response


async def _relay(
    services: ApiServices, opened: sse.OpenedStream, response: web.StreamResponse
) -> None:
    async for frame in sse.frames(services, opened):
        await response.write(frame)


async def _until_done_or_gone(request: web.Request, relay: asyncio.Task[None]) -> bool:
    """True when every frame was written; False (the relay cancelled) once the client has gone.

    Between events the relay only polls storage, so a write would notice a closed connection
    only at the next event; the transport says so at once.
    """
    while True:
        done, _ = await asyncio.wait({relay}, timeout=_CLIENT_CHECK_SECONDS)
        if done:
            try:
                relay.result()
            except ConnectionResetError:
                return False
            return True
        transport = request.transport
        if transport is None or transport.is_closing():
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await relay
            return False


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)
