"""The OpenAI-compatible routes where a response can stream: aiohttp glue around
headrace.api.openai_stream.

API Gateway's HTTP API buffers a function's answer, so `stream: true` is served where LLM
Engine's streaming route is: on AWS the streaming function's app (handlers/stream_app.py, behind
its Function URL) serves every OpenAI-compatible route from `route_defs`, streamed or not, so
one base URL does for an SDK; locally the gateway hands a request that asks to stream to
`stream_if_asked` and the others to the routes' Lambda handlers, as template.yaml declares them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers import stream_relay
from handlers.stream_relay import STREAM_SECONDS
from headrace.api import idempotency, openai_serving, openai_stream
from headrace.api.auth import api_key_from_headers, authenticate
from headrace.api.openai_responses import error_of
from headrace.api.openai_serving import Answer, Kind
from headrace.api.services import ApiServices, default_services
from headrace.core import routes
from headrace.core.errors import HeadraceError

logger = logging.getLogger("headrace.stream")

MAX_BODY_BYTES = 10 * 1024 * 1024  # the HTTP API's payload quota, as on the other routes

KINDS: dict[str, Kind] = {
    routes.OPENAI_COMPLETIONS: "completion",
    routes.V2_COMPLETIONS: "completion",
    routes.OPENAI_CHAT_COMPLETIONS: "chat",
    routes.V2_CHAT_COMPLETIONS: "chat",
}


def route_defs() -> list[web.RouteDef]:
    """Every OpenAI-compatible route, streamed or not (the streaming function's app)."""
    posts = [web.post(path, functools.partial(serve, kind=kind)) for path, kind in KINDS.items()]
    return [*posts, web.get(routes.OPENAI_MODELS, models), web.get(routes.OPENAI_MODEL, models)]


def streaming_routes() -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse | None]]]:
    """Route key -> `stream_if_asked`, for the local gateway (its `streaming_routes`)."""
    return {f"POST {path}": stream_if_asked for path in KINDS}


async def stream_if_asked(request: web.Request) -> web.StreamResponse | None:
    """The stream of a POST to a completions or chat route whose body asks for one; None for
    any other request (the local gateway then calls the route's Lambda handler)."""
    kind = KINDS.get(request.path)
    length = request.content_length
    # Without a length, or over the limit, the gateway answers as API Gateway does (a body it
    # has begun to read cannot be read again).
    if request.method != "POST" or kind is None or length is None or length > MAX_BODY_BYTES:
        return None
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body: over the {MAX_BODY_BYTES // 2**20} MB payload limit")
    return await _stream(request, body, kind) if _asks_to_stream(body) else None


async def serve(request: web.Request, *, kind: Kind) -> web.StreamResponse:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body: over the {MAX_BODY_BYTES // 2**20} MB payload limit")
    if _asks_to_stream(body):
        return await _stream(request, body, kind)
    headers = _headers(request)
    try:
        services = await asyncio.to_thread(default_services)
        result = await asyncio.to_thread(_answer, services, headers, body, kind)
    except HeadraceError as e:
        return _error(e.status_code, e.detail)
    except Exception:
        logger.exception("an OpenAI-compatible route failed")
        return _error(500, "internal error")
    return _json(result)


def _answer(services: ApiServices, headers: dict[str, str], body: bytes, kind: Kind) -> Answer:
    owner = authenticate(services, api_key_from_headers(headers))
    job = openai_stream.prepare(services, body, kind)
    key = idempotency.key_from_headers(headers)
    return openai_serving.answer(services, owner=owner, job=job, key=key)


async def models(request: web.Request) -> web.Response:
    try:
        services = await asyncio.to_thread(default_services)
        api_key = api_key_from_headers(_headers(request))
        await asyncio.to_thread(authenticate, services, api_key)
        name = request.match_info.get("model")
        found = (
            openai_serving.model_list(services)
            if name is None
            else openai_serving.model_card(services, name)
        )
    except HeadraceError as e:
        return _error(e.status_code, e.detail)
    return web.json_response(found.model_dump(mode="json"))


async def _stream(request: web.Request, body: bytes, kind: Kind) -> web.StreamResponse:
    try:
        services = await asyncio.to_thread(default_services)
        opened = await openai_stream.start(
            services, headers=_headers(request), body=body, kind=kind
        )
    except HeadraceError as e:
        return _error(e.status_code, e.detail)
    except Exception:
        logger.exception("an OpenAI-compatible stream failed before streaming")
        return _error(500, "internal error")
    frames = openai_stream.frames(services, opened, timeout_seconds=STREAM_SECONDS)
    return await stream_relay.relay(
        request, frames, headers=opened.headers, request_id=opened.request_id
    )


def _asks_to_stream(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except ValueError:
        return False  # answered whole: a 400 naming the body
    return isinstance(parsed, dict) and parsed.get("stream") is True


def _headers(request: web.Request) -> dict[str, str]:
    # As the HTTP routes get them (API Gateway's events): names lower-cased, UTF-8 only.
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        try:
            text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a surrogate no byte escapes to
            text = value.encode("utf-8", "replace").decode("utf-8")
        headers.setdefault(name.lower(), text)
    return headers


def _json(result: Answer) -> web.Response:
    headers = {"x-request-id": result.request_id} if result.request_id else {}
    if result.retry is not None:
        headers["x-should-retry"] = "true" if result.retry else "false"
    return web.json_response(result.body, status=result.status, headers=headers)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(error_of(status, message).model_dump(mode="json"), status=status)
