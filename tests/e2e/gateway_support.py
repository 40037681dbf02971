"""The local gateway serving the toy HTTP template over real HTTP on loopback, for the sync tests
of tests/e2e/test_gateway*.py: a gateway on a loop of its own, and its answers."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from headrace.dev.gateway import LocalGateway
from tests.toy_gateway import TEMPLATE, toy_resolver


class RunningGateway:
    """A gateway serving from its own event loop in a background thread, for sync tests."""

    def __init__(self, gateway: LocalGateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
        chunked: bool = False,
    ) -> Response:
        url = urlsplit(self.base_url)
        assert url.hostname and url.port
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders(iter([body or b""]), encode_chunked=True)
            else:
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response({"openapi": "3.1.0"})


def toy_gateway() -> LocalGateway:
    """The toy template's routes, and GET /openapi.json as an extra route."""
    extra = [web.get("/openapi.json", openapi)]
    return LocalGateway.from_template(TEMPLATE, resolver=toy_resolver, extra_routes=extra)


def echo(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    resp = gw.request(method, path, **kwargs)
    assert resp.status == 200, resp.body
    assert resp.header("x-echo") == "yes"
    result: dict[str, Any] = resp.json()
    assert result["event"]["requestContext"]["requestId"] == resp.header("apigw-requestid")
    return result
