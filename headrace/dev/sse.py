"""`POST /v1/llm/completions-stream`: LLM Engine's server-sent events, served by the local gateway.

A buffered Lambda behind API Gateway cannot stream a response, so this route lives beside the
payload-2.0 routes; it calls the same service functions (submit, then follow the stored stream).
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from handlers.http import api_key_from_headers, services
from headrace import completions, streaming
from headrace.contracts import parse_completion_request
from headrace.errors import HeadraceError
from headrace.logs import request_context

logger = logging.getLogger("headrace.gateway")

PATH = "/v1/llm/completions-stream"


def route_defs() -> list[web.RouteDef]:
    return [web.post(PATH, completions_stream)]


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


async def completions_stream(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    try:
        svc = await asyncio.to_thread(services)
        owner = await asyncio.to_thread(
            completions.authenticate, svc, api_key_from_headers(request.headers)
        )
        completion = parse_completion_request(body)
        model = completions.resolve_model(svc, completion, request.query.get("model_endpoint_name"))
        submitted = await asyncio.to_thread(
            completions.submit, svc, owner=owner, request=completion, model=model
        )
    except HeadraceError as e:
        return _error(e.status_code, e.detail)
    response = web.StreamResponse(
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-request-id": submitted.request_id,
        }
    )
    await response.prepare(request)
    with request_context(submitted.request_id):
        try:
            async for event in streaming.follow_stored(
                svc, owner=owner, request_id=submitted.request_id
            ):
                line = json.dumps(event.model_dump(mode="json"), ensure_ascii=False)
                await response.write(f"data: {line}\n\n".encode())
        except HeadraceError as e:
            # Streaming began: the failure is one error event, as LLM Engine sends it.
            event = streaming.error_event(submitted.request_id, e.status_code, e.detail)
            await response.write(f"data: {event.model_dump_json()}\n\n".encode())
        except ConnectionResetError:
            logger.info("stream client went away; the job goes on")
    await response.write_eof()
    return response
