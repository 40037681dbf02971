"""LLM Engine's streaming route, `POST /v1/llm/completions-stream`, as a small aiohttp app.

The one entry point that is a web server rather than a Lambda handler: API Gateway buffers a
Lambda's answer, so on AWS this app runs in a Lambda function behind the AWS Lambda Web Adapter
(its layer turns each Function URL request into an HTTP request to this app and streams the
answer back: template.yaml, `CompletionsStreamFunction`, started by `stream_app.sh`). Locally
the gateway serves the same route from this module (`route_defs`), so what runs locally is what
deploys. The work is `headrace.api.sse`; this is the HTTP glue.

Every answer before the stream starts is Headrace's own JSON `{"detail": ...}`, aiohttp's
plain-text ones (a body over the limit, an error of ours) included. The app checks the API key
itself, as every handler does (the Function URL has no authorizer).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web

from handlers import openai_stream_app, stream_relay
from handlers.stream_relay import STREAM_SECONDS
from headrace.api import sse
from headrace.api.services import default_services
from headrace.core import routes
from headrace.core.errors import HeadraceError

logger = logging.getLogger("headrace.stream")

MAX_BODY_BYTES = 10 * 1024 * 1024  # the HTTP API's payload quota, as on the other routes
HEALTH_PATH = "/healthz"  # the Web Adapter's readiness check (AWS_LWA_READINESS_CHECK_PATH)


def route_defs() -> list[web.RouteDef]:
    return [web.post(routes.COMPLETIONS_STREAM, completions_stream)]


def make_app() -> web.Application:
    """The app the function serves: the streaming route and a readiness check."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    # And OpenAI's routes, streamed or not, so one base URL does for its SDKs.
    app.add_routes([*route_defs(), *openai_stream_app.route_defs(), web.get(HEALTH_PATH, _healthy)])
    return app


async def completions_stream(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body: over the {MAX_BODY_BYTES // 2**20} MB payload limit")
    # As the HTTP routes get them (API Gateway's events): names lower-cased, UTF-8 only.
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), _utf8(value))
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
    frames = sse.frames(services, opened, timeout_seconds=STREAM_SECONDS)
    return await stream_relay.relay(
        request, frames, headers=opened.headers, request_id=opened.request_id
    )


async def _healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def _utf8(text: str) -> str:
    """A header as a Lambda event carries it: UTF-8 only. aiohttp keeps bytes that are not
    UTF-8 as lone surrogates, which no later encode survives; they become U+FFFD (a key with
    one is then an unknown key, 401), as headrace.dev.apigw does for the other routes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte escapes to
        return text.encode("utf-8", "replace").decode("utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the streaming route (stream_app.sh).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    default_services()  # settings, logging and clients before the readiness check passes
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
