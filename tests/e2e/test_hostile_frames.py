"""Hostile WebSocket frames against the local stack: JSON nested deeper than Python recurses gets
its error event; a message over API Gateway's 128 KB closes the connection with 1009, as API
Gateway does, and one at the limit is answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack

T = TypeVar("T")
MESSAGE_LIMIT = 128 * 1024


def run(
    scenario: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[T]], stack: LocalStack
) -> T:
    async def connected() -> T:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                stack.ws_url, headers={"x-api-key": stack.api_key}, max_msg_size=0
            ) as ws,
        ):
            return await scenario(ws)

    return asyncio.run(asyncio.wait_for(connected(), 60))


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    message = await ws.receive(timeout=20)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


def complete_of_size(size: int) -> str:
    """A `complete` frame of exactly `size` bytes (its prompt is over the prompt limit)."""
    frame = json.dumps({"action": "complete", "model": DEV_MODEL_NAME, "prompt": ""})
    return frame.replace('"prompt": ""', '"prompt": "' + "x" * (size - len(frame)) + '"')


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 1100 + "]" * 1100,
        '{"action": "complete", "prompt": "x", "guided_json": ' + "[" * 1100 + "]" * 1100 + "}",
    ],
    ids=["bare", "in-complete"],
)
def test_json_nested_1100_deep_gets_an_error_event(stack: LocalStack, frame: str) -> None:
    async def scenario(ws: aiohttp.ClientWebSocketResponse) -> tuple[Any, Any]:
        await ws.send_str(frame)
        error = await next_json(ws)
        await ws.send_json({"action": "subscribe", "request_id": "nope"})
        return error, await next_json(ws)

    error, after = run(scenario, stack)
    assert error["error"]["status_code"] == 400, error
    assert error["error"]["content"]["error"].startswith("frame: JSON nested too deeply"), error
    assert after["error"]["status_code"] == 404  # still connected, still answered


def test_a_message_over_128_kb_closes_the_connection_with_1009(stack: LocalStack) -> None:
    async def scenario(ws: aiohttp.ClientWebSocketResponse) -> tuple[Any, Any]:
        await ws.send_str(complete_of_size(MESSAGE_LIMIT))
        at_limit = await next_json(ws)
        await ws.send_str(complete_of_size(MESSAGE_LIMIT + 1))
        closing = await ws.receive(timeout=20)
        return at_limit, closing

    at_limit, closing = run(scenario, stack)
    assert at_limit["error"]["status_code"] == 413, at_limit  # answered: the prompt is too long
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing  # no event first
    assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
