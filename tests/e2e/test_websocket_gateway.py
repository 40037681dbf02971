"""The local gateway's WebSocket side over real sockets: aiohttp's WebSocket client, boto3's
apigatewaymanagementapi client, and one LocalGateway serving HTTP and WebSocket on one port, in
front of the toy handlers of tests/gateway_fixtures/ws_template.yaml."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.util
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar

import aiohttp
import boto3
import pytest
from botocore.config import Config

from headrace.dev.gateway import LocalGateway
from headrace.dev.websocket import LocalWebSocketApi
from headrace.dev.ws_events import route_selection_key, select_route
from infra.template import (
    WebSocketRoute,
    load_template,
    websocket_route_selection_expression,
    websocket_routes,
    websocket_stage,
)

FIXTURES = Path(__file__).parent / "gateway_fixtures"
WS_TEMPLATE = FIXTURES / "ws_template.yaml"
CONNECTION_ID = re.compile(r"^[A-Za-z0-9]{15}=$")
CLF_TIME = re.compile(r"^\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000$")
T = TypeVar("T")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOY_MODULES = {"toy_handlers": _load("toy_handlers"), "toy_ws_handlers": _load("toy_ws_handlers")}
TOY_WS = TOY_MODULES["toy_ws_handlers"]


def toy_resolver(handler: str) -> Any:
    module, _, name = handler.rpartition(".")
    return getattr(TOY_MODULES[module], name)


def toy_ws_routes(*without: str) -> list[WebSocketRoute]:
    return [r for r in websocket_routes(load_template(WS_TEMPLATE)) if r.route_key not in without]


class RunningStack:
    """A LocalGateway with the WebSocket API's routes, serving from its own loop in a thread."""

    def __init__(self, routes: list[WebSocketRoute] | None = None, **ws_options: Any) -> None:
        ws_options.setdefault("resolver", toy_resolver)
        if routes is None:
            self.ws_api = LocalWebSocketApi.from_template(WS_TEMPLATE, **ws_options)
        else:
            self.ws_api = LocalWebSocketApi(routes, **ws_options)
        self.gateway = LocalGateway.from_template(
            WS_TEMPLATE, resolver=toy_resolver, extra_routes=self.ws_api.route_defs()
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


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with RunningStack(max_message_bytes=8192) as running:
        yield running


@pytest.fixture(scope="module")
def management(stack: RunningStack) -> Iterator[Any]:
    client = stack.management()
    yield client
    client.close()


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


# --- the template ---------------------------------------------------------------------------


def test_real_template_websocket_routes() -> None:
    template = load_template()
    routes = {r.route_key: r for r in websocket_routes(template)}
    assert {k: (r.handler, r.function_logical_id, r.two_way) for k, r in routes.items()} == {
        "$connect": ("handlers.websocket.connect", "ConnectFunction", False),
        "$disconnect": ("handlers.websocket.disconnect", "DisconnectFunction", False),
        "complete": ("handlers.websocket.complete", "CompleteFunction", True),
        "subscribe": ("handlers.websocket.subscribe", "SubscribeFunction", True),
        "$default": ("handlers.websocket.default", "DefaultFunction", True),
    }
    assert all(r.timeout_seconds == 30 for r in routes.values())
    assert websocket_stage(template) == "ws"
    assert websocket_route_selection_expression(template) == "$request.body.action"
    api = LocalWebSocketApi.from_template()  # handlers are imported lazily: no import here
    assert api.stage == "ws"
    assert set(api.routes) == set(routes)


def test_toy_template_follows_sub_and_join_forms() -> None:
    routes = {r.route_key: r for r in toy_ws_routes()}
    assert routes["$disconnect"].handler == "toy_ws_handlers.disconnect"  # Fn::Join + GetAtt
    assert routes["echo"].two_way and not routes["callback"].two_way
    assert routes["sleep"].timeout_seconds == 1


def test_route_selection_rules() -> None:
    keys = {"$connect", "$default", "echo"}
    assert select_route('{"action": "echo"}', keys) == "echo"
    for text in ("not json", '{"action": "nope"}', '{"action": 5}', '["echo"]', '"echo"',
                 '{"action": "$connect"}', '{"type": "echo"}', ""):  # fmt: skip
        assert select_route(text, keys) == "$default", text
    assert select_route('{"type": "echo"}', keys, key="type") == "echo"
    assert route_selection_key("$request.body.action") == "action"
    assert route_selection_key("${request.body.type}") == "type"
    with pytest.raises(ValueError):
        route_selection_key("$request.header.x")


# --- connecting -----------------------------------------------------------------------------


def test_http_and_websocket_share_one_port(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with session.get(stack.base_url + "/v1/ping") as resp:
            assert resp.status == 200
            assert resp.headers["x-echo"] == "yes"
        async with session.get(stack.ws_url) as resp:  # a plain GET, no upgrade
            assert resp.status == 426
        async with session.ws_connect(stack.ws_url) as ws:
            assert CONNECTION_ID.match(await connection_id_of(ws))

    run(scenario)


def test_connect_event_shape(stack: RunningStack) -> None:
    url = stack.ws_url + "?api_key=good&tag=a&tag=b&name=caf%C3%A9"
    headers = {"x-api-key": "k1", "User-Agent": "toy-client/1", "X-Custom": "v"}

    async def scenario(session: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
        async with session.ws_connect(url, headers=headers) as ws:
            answer = await echo(ws)
        return answer["event"]["requestContext"]["connectionId"], answer["event"]

    connection_id, message = run(scenario)
    (event,) = TOY_WS.recorded(connection_id, "$connect")
    assert set(event) == {
        "headers",
        "multiValueHeaders",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "requestContext",
        "isBase64Encoded",
    }
    h = event["headers"]
    assert h["Host"] == stack.host
    assert h["x-api-key"] == "k1"
    assert h["User-Agent"] == "toy-client/1"
    assert h["Sec-WebSocket-Version"] == "13"
    assert h["Sec-WebSocket-Key"]
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Port"] == stack.host.rsplit(":", 1)[1]
    assert h["X-Amzn-Trace-Id"].startswith("Root=1-")
    assert not {"Connection", "Upgrade"} & set(h)
    assert event["multiValueHeaders"]["X-Custom"] == ["v"]
    assert event["queryStringParameters"] == {"api_key": "good", "tag": "b", "name": "café"}
    assert event["multiValueQueryStringParameters"] == {
        "api_key": ["good"],
        "tag": ["a", "b"],
        "name": ["café"],
    }
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$connect"
    assert ctx["eventType"] == "CONNECT"
    assert ctx["messageDirection"] == "IN"
    assert ctx["stage"] == "ws"
    assert ctx["domainName"] == stack.host
    assert ctx["apiId"] == "local"
    assert CONNECTION_ID.match(ctx["connectionId"])
    assert ctx["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "toy-client/1"}
    assert ctx["requestId"] == ctx["extendedRequestId"]
    assert CLF_TIME.match(ctx["requestTime"])
    assert ctx["requestTimeEpoch"] >= ctx["connectedAt"]
    assert abs(ctx["connectedAt"] / 1000 - datetime.now(UTC).timestamp()) < 60
    assert event["isBase64Encoded"] is False

    # The MESSAGE event of the same connection.
    assert set(message) == {"requestContext", "body", "isBase64Encoded"}
    mctx = message["requestContext"]
    assert mctx["routeKey"] == "echo"
    assert mctx["eventType"] == "MESSAGE"
    assert mctx["connectedAt"] == ctx["connectedAt"]
    assert mctx["domainName"] == stack.host and mctx["stage"] == "ws"
    assert mctx["identity"] == {"sourceIp": "127.0.0.1"}
    assert mctx["messageId"] and mctx["messageId"] != mctx["requestId"]
    assert mctx["requestId"] != ctx["requestId"]
    assert json.loads(message["body"]) == {"action": "echo"}
    assert message["isBase64Encoded"] is False


def test_connect_without_query_has_no_query_keys(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> str:
        async with session.ws_connect(stack.ws_url) as ws:
            return await connection_id_of(ws)

    (event,) = TOY_WS.recorded(run(scenario), "$connect")
    assert "queryStringParameters" not in event
    assert "multiValueQueryStringParameters" not in event


def test_connect_handler_refuses_the_handshake(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> dict[str, int]:
        statuses = {}
        for key in ("bad", "boom"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(stack.ws_url + f"?api_key={key}")
            statuses[key] = refused.value.status
        return statuses

    assert run(scenario) == {"bad": 401, "boom": 500}
    refused = TOY_WS.wait_for(
        lambda e: (e.get("queryStringParameters") or {}).get("api_key") == "bad"
    )
    assert refused["requestContext"]["connectionId"] not in stack.ws_api.connection_ids()


def test_connect_handler_chooses_the_subprotocol(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[str | None, str | None]:
        async with session.ws_connect(stack.ws_url, protocols=("other", "headrace.v1")) as ws:
            chosen = ws.protocol
        async with session.ws_connect(stack.ws_url, protocols=("other",)) as ws:
            return chosen, ws.protocol

    assert run(scenario) == ("headrace.v1", None)


def test_refused_handshake_carries_the_handler_response(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[int, Any]:
        key = base64.b64encode(b"0123456789abcdef").decode()
        upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": key}  # fmt: skip
        async with session.get(stack.ws_url + "?api_key=bad", headers=upgrade) as resp:
            # The handler set no content-type: API Gateway's default, as on HTTP routes.
            assert resp.headers["content-type"] == "text/plain; charset=utf-8"
            assert resp.headers["x-amzn-RequestId"]
            return resp.status, json.loads(await resp.text())

    assert run(scenario) == (401, {"detail": "unknown API key"})


# --- frames ---------------------------------------------------------------------------------


def test_route_selection_over_the_wire(stack: RunningStack) -> None:
    frames = ["not json", '{"action": "nope"}', '{"action": 5}', '["echo"]', '{"type": "echo"}']

    async def scenario(session: aiohttp.ClientSession) -> list[Any]:
        answers = []
        async with session.ws_connect(stack.ws_url) as ws:
            for frame in frames:
                await ws.send_str(frame)
                answers.append(await receive_json(ws))
            await ws.send_bytes(b"\x00\xffbinary")
            answers.append(await receive_json(ws))
            assert (await echo(ws))["event"]["requestContext"]["routeKey"] == "echo"
        return answers

    answers = run(scenario)
    for frame, answer in zip(frames, answers, strict=False):
        assert answer == {"route": "$default", "body": frame, "isBase64Encoded": False}
    assert answers[-1] == {
        "route": "$default",
        "body": base64.b64encode(b"\x00\xffbinary").decode(),
        "isBase64Encoded": True,
    }


def test_one_way_route_sends_nothing_back(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.ws_connect(stack.ws_url) as ws:
            await ws.send_json({"action": "quiet"})
            return await echo(ws, n=1)

    assert json.loads(run(scenario)["event"]["body"]) == {"action": "echo", "n": 1}


def test_frames_are_handled_concurrently_answers_in_completion_order(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> list[Any]:
        async with session.ws_connect(stack.ws_url) as ws:
            await ws.send_json({"action": "sleep", "seconds": 0.4})
            await ws.send_json({"action": "echo"})
            return [await receive_json(ws), await receive_json(ws)]

    first, second = run(scenario)
    assert first["event"]["requestContext"]["routeKey"] == "echo"
    assert second == {"slept": 0.4}


def test_handler_errors_answer_internal_server_error(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[str, list[Any]]:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            answers = []
            for action in ("boom", "malformed"):
                await ws.send_json({"action": action})
                answers.append(await receive_json(ws))
            await ws.send_json({"action": "sleep", "seconds": 1.3})  # the function's Timeout is 1 s
            answers.append(await receive_json(ws))
            assert await connection_id_of(ws) == connection_id  # the connection survives
        return connection_id, answers

    connection_id, answers = run(scenario)
    for answer in answers:
        assert answer["message"] == "Internal server error"
        assert answer["connectionId"] == connection_id
        assert re.match(r"^[A-Za-z0-9]{15}=$", answer["requestId"])
    assert len({a["requestId"] for a in answers}) == 3


def test_oversize_frame_gets_a_reply_and_the_connection_stays(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[str, Any, Any]:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await ws.send_str("x" * 8193)
            too_long = await receive_json(ws)
            await ws.send_str("é" * 4096)  # 8192 bytes: the limit is in bytes, and inclusive
            at_limit = await receive_json(ws)
            assert await connection_id_of(ws) == connection_id
        return connection_id, too_long, at_limit

    connection_id, too_long, at_limit = run(scenario)
    assert too_long["message"] == "Message too long"
    assert too_long["connectionId"] == connection_id
    assert too_long["requestId"]
    assert at_limit["route"] == "$default" and len(at_limit["body"]) == 4096


def test_without_connect_and_default_routes() -> None:
    """No $connect: every upgrade is accepted. No $default: API Gateway answers Forbidden.
    And a custom oversize reply, and an integration timeout shorter than the function's."""
    routes = toy_ws_routes("$connect", "$default")
    oversize = lambda c, r: {"error": "too big", "id": c}  # noqa: E731
    options: dict[str, Any] = {"max_message_bytes": 64, "oversize_reply": oversize}
    with RunningStack(routes, integration_timeout_seconds=0.3, **options) as running:

        async def scenario(session: aiohttp.ClientSession) -> list[Any]:
            async with session.ws_connect(running.ws_url + "?api_key=bad") as ws:
                connection_id = await connection_id_of(ws)
                await ws.send_str("not json")
                forbidden = await receive_json(ws)
                await ws.send_str("y" * 65)
                too_big = await receive_json(ws)
                # The integration gives up before the function's own 1 s Timeout.
                await ws.send_json({"action": "sleep", "seconds": 0.6})
                timed_out = await receive_json(ws)
            return [connection_id, forbidden, too_big, timed_out]

        connection_id, forbidden, too_big, timed_out = run(scenario)
    assert forbidden["message"] == "Forbidden" and forbidden["connectionId"] == connection_id
    assert too_big == {"error": "too big", "id": connection_id}
    assert timed_out["message"] == "Endpoint request timed out"
    assert timed_out["connectionId"] == connection_id


# --- @connections ---------------------------------------------------------------------------


def test_handler_posts_back_through_connections(stack: RunningStack) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[str, Any]:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await ws.send_json({"action": "callback"})
            return connection_id, await receive_json(ws)

    connection_id, posted = run(scenario)
    assert posted["via"] == "callback"
    assert posted["connectionId"] == connection_id
    assert posted["sourceIp"] == "127.0.0.1"


def test_management_post_get_delete(stack: RunningStack, management: Any) -> None:
    async def scenario(session: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
        async with session.ws_connect(stack.ws_url, headers={"User-Agent": "ua/2"}) as ws:
            connection_id = await connection_id_of(ws)
            await asyncio.to_thread(
                management.post_to_connection, ConnectionId=connection_id, Data=b'{"hello": 1}'
            )
            assert await receive_json(ws) == {"hello": 1}
            await asyncio.to_thread(
                management.post_to_connection, ConnectionId=connection_id, Data=b"\xff\x00"
            )
            msg = await ws.receive(timeout=5)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\xff\x00")
            described = await asyncio.to_thread(
                management.get_connection, ConnectionId=connection_id
            )
            await asyncio.to_thread(management.delete_connection, ConnectionId=connection_id)
            closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE
            assert closed.data == 1000
        return connection_id, described

    connection_id, described = run(scenario)
    assert described["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert described["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "ua/2"}
    assert described["ConnectedAt"].tzinfo is not None
    assert described["LastActiveAt"] >= described["ConnectedAt"]
    assert abs((datetime.now(UTC) - described["ConnectedAt"]).total_seconds()) < 60

    event = disconnect_event(connection_id)
    assert event["requestContext"]["disconnectStatusCode"] == 1000
    assert event["requestContext"]["disconnectReason"] == "Connection deleted"
    calls: list[tuple[Callable[..., Any], dict[str, Any]]] = [
        (management.post_to_connection, {"Data": b"late"}),
        (management.get_connection, {}),
        (management.delete_connection, {}),
    ]
    for call, arguments in calls:
        with pytest.raises(management.exceptions.GoneException) as gone:
            call(ConnectionId=connection_id, **arguments)
        assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
        assert gone.value.response["Error"]["Code"] == "GoneException"


def test_disconnect_on_client_close_then_gone(stack: RunningStack, management: Any) -> None:
    async def scenario(session: aiohttp.ClientSession) -> str:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            await ws.close(code=4000, message=b"bye")
        return connection_id

    connection_id = run(scenario)
    event = disconnect_event(connection_id)
    assert set(event) == {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"}
    assert event["headers"] == {
        "Host": stack.host,
        "x-api-key": "",
        "X-Forwarded-For": "",
        "x-restapi": "",
    }
    assert event["multiValueHeaders"]["Host"] == [stack.host]
    ctx = event["requestContext"]
    assert ctx["routeKey"] == "$disconnect"
    assert ctx["eventType"] == "DISCONNECT"
    assert ctx["disconnectStatusCode"] == 4000
    assert ctx["disconnectReason"] == "bye"
    assert ctx["connectionId"] == connection_id
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    (connect,) = TOY_WS.recorded(connection_id, "$connect")
    assert ctx["connectedAt"] == connect["requestContext"]["connectedAt"]
    assert len(TOY_WS.recorded(connection_id, "$disconnect")) == 1

    with pytest.raises(management.exceptions.GoneException) as gone:
        management.post_to_connection(ConnectionId=connection_id, Data=b"anyone?")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
    assert gone.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "GoneException"
    )
    with pytest.raises(management.exceptions.GoneException):
        management.get_connection(ConnectionId="NeverConnected=")


def test_post_over_the_message_limit_is_413(stack: RunningStack, management: Any) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)
            with pytest.raises(management.exceptions.PayloadTooLargeException) as too_large:
                await asyncio.to_thread(
                    management.post_to_connection, ConnectionId=connection_id, Data=b"z" * 8193
                )
            assert too_large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
            await asyncio.to_thread(
                management.post_to_connection, ConnectionId=connection_id, Data=b"z" * 8192
            )
            msg = await ws.receive(timeout=5)
            assert msg.data == "z" * 8192

    run(scenario)


def test_concurrent_posts_arrive_whole(stack: RunningStack, management: Any) -> None:
    payloads = [json.dumps({"n": n, "pad": str(n) * 3000}) for n in range(40)]

    async def scenario(session: aiohttp.ClientSession) -> list[str]:
        async with session.ws_connect(stack.ws_url) as ws:
            connection_id = await connection_id_of(ws)

            def post_all() -> None:
                with ThreadPoolExecutor(8) as pool:
                    for _ in pool.map(
                        lambda p: management.post_to_connection(
                            ConnectionId=connection_id, Data=p.encode()
                        ),
                        payloads,
                    ):
                        pass

            await asyncio.to_thread(post_all)
            return [(await ws.receive(timeout=5)).data for _ in payloads]

    assert sorted(run(scenario)) == sorted(payloads)


# --- closing --------------------------------------------------------------------------------


def test_idle_connection_is_closed_going_away() -> None:
    with RunningStack(idle_timeout_seconds=0.7) as running:

        async def scenario(session: aiohttp.ClientSession) -> tuple[str, aiohttp.WSMessage]:
            async with session.ws_connect(running.ws_url) as ws:
                connection_id = await connection_id_of(ws)
                for _ in range(3):  # frames keep it alive past the idle timeout
                    await asyncio.sleep(0.2)
                    await echo(ws)
                return connection_id, await ws.receive(timeout=5)

        connection_id, closed = run(scenario)
    assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "Going away")
    ctx = disconnect_event(connection_id)["requestContext"]
    assert (ctx["disconnectStatusCode"], ctx["disconnectReason"]) == (1001, "Going away")


def test_connection_is_closed_after_its_maximum_duration() -> None:
    with RunningStack(max_connection_seconds=0.5) as running:

        async def scenario(session: aiohttp.ClientSession) -> aiohttp.WSMessage:
            async with session.ws_connect(running.ws_url) as ws:
                while True:  # busy, but not for ever
                    await ws.send_json({"action": "echo"})
                    msg = await ws.receive(timeout=5)
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        return msg

        closed = run(scenario)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)


def test_close_all_closes_sockets_and_fires_disconnect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="headrace.gateway.ws")
    with RunningStack() as running:

        async def scenario(session: aiohttp.ClientSession) -> tuple[str, aiohttp.WSMessage]:
            async with session.ws_connect(running.ws_url) as ws:
                connection_id = await connection_id_of(ws)
                await asyncio.to_thread(running.close)
                return connection_id, await ws.receive(timeout=5)

        connection_id, closed = run(scenario)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    # close_all waited for the $disconnect call: it is recorded already.
    (event,) = TOY_WS.recorded(connection_id, "$disconnect")
    assert event["requestContext"]["disconnectStatusCode"] == 1001
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "headrace.gateway.ws" and getattr(r, "connectionId", None) == connection_id
    ]
    assert [line["ws"] for line in lines] == ["connect", "message", "close", "disconnect"]
    assert lines[1]["routeKey"] == "echo" and lines[1]["outcome"] == "ok"


def test_routes_are_rejected_when_duplicated() -> None:
    route = toy_ws_routes()[0]
    with pytest.raises(ValueError, match="duplicate"):
        LocalWebSocketApi([route, dataclasses.replace(route, handler="x.y")])


def test_dropped_connection_fires_disconnect_1006(stack: RunningStack) -> None:
    """The client vanishes without a close frame: $disconnect still runs, with 1006."""
    user_agent = f"raw-{uuid.uuid4()}"
    host, port = stack.host.rsplit(":", 1)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: {stack.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"User-Agent: {user_agent}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(upgrade.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    connect = TOY_WS.wait_for(lambda e: e.get("headers", {}).get("User-Agent") == user_agent)
    ctx = disconnect_event(connect["requestContext"]["connectionId"])["requestContext"]
    assert ctx["disconnectStatusCode"] == 1006
    assert ctx["disconnectReason"] == "Connection lost"
