"""Requests aiohttp cannot parse, answered the way every other error of the API is.

A request line over 8 KB, or a header byte HTTP forbids (a NUL, a space in a name), never
reaches a route: aiohttp's parser rejects it and would answer plain text and log a traceback.
API Gateway answers such a request 400 as well; here it is Headrace's JSON `{"detail": ...}`
and one log line, so hostile input leaves no traceback behind.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

logger = logging.getLogger("headrace.gateway")

_MAX_DETAIL_CHARS = 200


class JsonErrorAppRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp offers no hook for the parser's answer; its Server only picks the handler class.
        server.__class__ = _JsonErrorServer
        return server


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _JsonErrorRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        detail = parser_detail(message or "malformed request")
        logger.warning("unparsable request answered %d: %s", status, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the parse error")
        response = web.Response(
            status=status,
            text=json.dumps({"detail": detail}),
            content_type="application/json",
        )
        response.force_close()
        return response


def parser_detail(message: str) -> str:
    """aiohttp's parser message, first line only and bounded (it can quote kilobytes)."""
    first = message.strip().splitlines()[0] if message.strip() else "malformed request"
    first = first.split(": bytearray(")[0].rstrip(":")
    if len(first) > _MAX_DETAIL_CHARS:
        first = first[: _MAX_DETAIL_CHARS - 1] + "…"
    return f"malformed HTTP request: {first}"
