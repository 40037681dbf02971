"""The local gateway's streaming route: aiohttp glue around `headrace.api.sse`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from headrace.api import sse
from headrace.api.services import default_services
from headrace.core import routes
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.gateway")


def route_defs() -> list[web.RouteDef]:
    return [web.post(routes.COMPLETIONS_STREAM, completions_stream)]


async def completions_stream(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    try:
        services = await asyncio.to_thread(default_services)
        opened = await sse.start(
            services,
            headers=request.headers,
            body=body,
            query_model=request.query.get("model_endpoint_name"),
        )
    except HeadraceError as e:
        return web.json_response({"detail": e.detail}, status=e.status_code)
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
