"""The local gateway's WebSocket side over real sockets, in front of the toy handlers of
tests/gateway_fixtures/ws_template.yaml: connecting, and frames; and the events of template.yaml's
routes, shaped like tests/events' samples. (@connections and closing:
test_websocket_connections.py.)"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from infra.template import TEMPLATE_PATH
from tests.e2e.websocket_support import (
    CLF_TIME,
    CONNECTION_ID,
    RunningStack,
    connection_id_of,
    disconnect_event,
    echo,
    receive_json,
    run,
)
from tests.events import WEBSOCKET_EVENTS, load_event, shape
from tests.toy_gateway import TOY_WS, toy_ws_routes


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with RunningStack(max_message_bytes=8192) as running:
        yield running


# --- connecting -----------------------------------------------------------------------------------


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


# --- frames ---------------------------------------------------------------------------------------


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


def test_an_oversize_message_closes_the_connection_with_1009(stack: RunningStack) -> None:
    """As API Gateway does: no reply, the connection closed (Message too big)."""

    async def scenario(session: aiohttp.ClientSession) -> tuple[Any, aiohttp.WSMessage]:
        async with session.ws_connect(stack.ws_url) as ws:
            await ws.send_str("é" * 4096)  # 8192 bytes: the limit is in bytes, and inclusive
            at_limit = await receive_json(ws)
            await ws.send_str("x" * 8193)
            closing = await ws.receive(timeout=5)
        return at_limit, closing

    at_limit, closing = run(scenario)
    assert at_limit["route"] == "$default" and len(at_limit["body"]) == 4096
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing
    assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


def test_without_connect_and_default_routes() -> None:
    """No $connect: every upgrade is accepted. No $default: API Gateway answers Forbidden.
    And an integration timeout shorter than the function's."""
    routes = toy_ws_routes("$connect", "$default")
    with RunningStack(routes, integration_timeout_seconds=0.3) as running:

        async def scenario(session: aiohttp.ClientSession) -> list[Any]:
            async with session.ws_connect(running.ws_url + "?api_key=bad") as ws:
                connection_id = await connection_id_of(ws)
                await ws.send_str("not json")
                forbidden = await receive_json(ws)
                # The integration gives up before the function's own 1 s Timeout.
                await ws.send_json({"action": "sleep", "seconds": 0.6})
                timed_out = await receive_json(ws)
            return [connection_id, forbidden, timed_out]

        connection_id, forbidden, timed_out = run(scenario)
    assert forbidden["message"] == "Forbidden" and forbidden["connectionId"] == connection_id
    assert timed_out["message"] == "Endpoint request timed out"
    assert timed_out["connectionId"] == connection_id


# --- the events of template.yaml's routes ---------------------------------------------------------


def echoing_resolver(handler: str) -> Any:
    """Records $connect and $disconnect; answers every other route with its event."""
    recording = {"handlers.websocket.connect": TOY_WS.connect}
    recording["handlers.websocket.disconnect"] = TOY_WS.disconnect
    return recording.get(handler, TOY_WS.echo)


def test_the_events_of_our_routes_are_shaped_as_api_gateway_sends_them() -> None:
    """A client connecting as headrace.client does and sending the sample events' frames: the
    events the handlers get have the samples' keys, recursively, with the same value types."""
    key = load_event(WEBSOCKET_EVENTS["$connect"])["headers"]["x-api-key"]
    frames = {route: load_event(WEBSOCKET_EVENTS[route])["body"] for route in ("complete",
              "subscribe", "cancel", "$default")}  # fmt: skip

    with RunningStack(template=TEMPLATE_PATH, resolver=echoing_resolver) as running:

        async def scenario(session: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
            headers, params = {"x-api-key": key}, {"api_key": key}
            async with session.ws_connect(running.ws_url, headers=headers, params=params) as ws:
                messages = {}
                for route, frame in frames.items():
                    await ws.send_str(frame)
                    messages[route] = (await receive_json(ws))["event"]
            return messages["complete"]["requestContext"]["connectionId"], messages

        connection_id, events = run(scenario)
        (events["$connect"],) = TOY_WS.recorded(connection_id, "$connect")
        events["$disconnect"] = disconnect_event(connection_id)
    assert set(events) == set(WEBSOCKET_EVENTS)
    for route, event in events.items():
        assert event["requestContext"]["routeKey"] == route
        assert shape(event) == shape(load_event(WEBSOCKET_EVENTS[route])), route
