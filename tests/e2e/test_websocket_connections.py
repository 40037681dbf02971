"""The local gateway's WebSocket connections over real sockets: boto3's apigatewaymanagementapi
client on @connections, and how connections close (idle, too old, the gateway stopping, dropped),
each with its $disconnect."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.e2e.websocket_support import (
    RunningStack,
    connection_id_of,
    disconnect_event,
    echo,
    receive_json,
    run,
)
from tests.toy_gateway import TOY_WS


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with RunningStack(max_message_bytes=8192) as running:
        yield running


@pytest.fixture(scope="module")
def management(stack: RunningStack) -> Iterator[Any]:
    client = stack.management()
    yield client
    client.close()


# --- @connections ---------------------------------------------------------------------------------


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


# --- closing --------------------------------------------------------------------------------------


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
