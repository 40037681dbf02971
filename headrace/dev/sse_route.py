"""The local gateway's streaming route: aiohttp glue around `headrace.api.sse`.

Every answer before the stream starts is Headrace's own JSON `{"detail": ...}`, aiohttp's
plain-text ones (a body over the limit, an error of ours) included.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from headrace.api import sse
from headrace.api.services import default_services
from headrace.core import routes
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.dev.apigw import wire_text
from headrace.dev.gateway import MAX_BODY_BYTES

logger = logging.getLogger("headrace.gateway")


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
        try:
            async for frame in sse.frames(services, opened):
                await response.write(frame)
        except ConnectionResetError:
            logger.info("stream client went away; the job goes on")
    await response.write_eof()
    return response


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)
