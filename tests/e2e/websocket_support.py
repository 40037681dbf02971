"""The local gateway's WebSocket API over real sockets, for tests/e2e/test_websocket_*.py: one
LocalGateway serving HTTP and WebSocket on one port from a loop of its own, and client helpers
on aiohttp's WebSocket client."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import boto3
from botocore.config import Config

from headrace.dev.gateway import LocalGateway
from headrace.dev.websocket import LocalWebSocketApi
from infra.template import WebSocketRoute
from tests.toy_gateway import TOY_WS, WS_TEMPLATE, toy_resolver

CONNECTION_ID = re.compile(r"^[A-Za-z0-9]{15}=$")
CLF_TIME = re.compile(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000$")
T = TypeVar("T")


class RunningStack:
    """A LocalGateway with the WebSocket API's routes, serving from its own loop in a thread.

    The routes are the template's unless given; the resolver (default: the toy handlers')
    serves its HTTP routes too."""

    def __init__(
        self,
        routes: list[WebSocketRoute] | None = None,
        *,
        template: Path = WS_TEMPLATE,
        **ws_options: Any,
    ) -> None:
        ws_options.setdefault("resolver", toy_resolver)
        if routes is None:
            self.ws_api = LocalWebSocketApi.from_template(template, **ws_options)
        else:
            self.ws_api = LocalWebSocketApi(routes, **ws_options)
        self.gateway = LocalGateway.from_template(
            template, resolver=ws_options["resolver"], extra_routes=self.ws_api.route_defs()
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.closed = False

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(10)

    def __enter__(self) -> RunningStack:
        self.thread.start()
        self.base_url = self.run(self.gateway.start())
        self.ws_url = self.ws_api.websocket_url(self.base_url)
        self.callback_url = self.ws_api.callback_url(self.base_url)
        self.host = self.base_url.removeprefix("http://")
        return self

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.run(self.ws_api.close_all())
            self.run(self.gateway.stop())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def management(self) -> Any:
        return boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=self.callback_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )


def run(scenario: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    """Run a client scenario on a fresh loop with its own session."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            return await scenario(session)

    return asyncio.run(main())


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def echo(ws: aiohttp.ClientWebSocketResponse, **fields: Any) -> dict[str, Any]:
    await ws.send_json({"action": "echo", **fields})
    answer: dict[str, Any] = await receive_json(ws)
    return answer


async def connection_id_of(ws: aiohttp.ClientWebSocketResponse) -> str:
    return str((await echo(ws))["event"]["requestContext"]["connectionId"])


def disconnect_event(connection_id: str) -> dict[str, Any]:
    def matches(e: dict[str, Any]) -> bool:
        ctx = e["requestContext"]
        return bool(ctx["connectionId"] == connection_id and ctx["eventType"] == "DISCONNECT")

    return TOY_WS.wait_for(matches)  # type: ignore[no-any-return]
