"""Token streaming over the WebSocket API: a real client, the local gateway, a real worker."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.support import Api

T = TypeVar("T")
Frame = dict[str, Any]


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(factory(), 60))


def ws_url(stack: LocalStack) -> str:
    return stack.base_url.replace("http://", "ws://") + "/ws"


class Socket:
    """A thin test client: send frames, collect events by request id."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []

    async def send(self, frame: Frame) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def next_frame(self) -> Frame:
        message = await self.ws.receive(timeout=30)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frame: Frame = json.loads(message.data)
        self.frames.append(frame)
        return frame

    async def ack(self) -> Frame:
        while True:
            frame = await self.next_frame()
            if frame.get("type") == "accepted" or frame.get("error"):
                return frame

    async def events(self, request_id: str, *, stop_after: int | None = None) -> list[Frame]:
        """Events of request_id (including any that came before the ack) until the last one."""
        seen = [f for f in self.frames if f.get("request_id") == request_id and "seq" in f]
        while not seen or not is_last(seen[-1]):
            if stop_after is not None and len(seen) >= stop_after:
                return seen
            frame = await self.next_frame()
            if frame.get("request_id") == request_id and "seq" in frame:
                seen.append(frame)
        return seen


def is_last(event: Frame) -> bool:
    return bool(event.get("error") or (event.get("output") or {}).get("finished"))


async def connect(
    session: aiohttp.ClientSession, stack: LocalStack, key: str | None = None
) -> Socket:
    ws = await session.ws_connect(ws_url(stack), headers={"x-api-key": key or stack.api_key})
    return Socket(ws)


def text_of(events: list[Frame]) -> str:
    return "".join(e["output"]["text"] for e in events if e.get("output"))


def complete_frame(prompt: str, **fields: Any) -> Frame:
    return {"action": "complete", "model": DEV_MODEL_NAME, "prompt": prompt, **fields}


async def stream_one(stack: LocalStack, frame: Frame) -> tuple[str, list[Frame]]:
    async with aiohttp.ClientSession() as session:
        socket = await connect(session, stack)
        await socket.send(frame)
        ack = await socket.ack()
        assert ack.get("type") == "accepted", ack
        events = await socket.events(ack["request_id"])
        await socket.ws.close()
        return ack["request_id"], events


@pytest.mark.parametrize(
    "frame",
    [
        complete_frame("The river", max_new_tokens=60, temperature=0),
        complete_frame("日本語 🚀 中文 한국어", max_new_tokens=80, temperature=1.0),
        complete_frame("🌊 ✨ 中文", max_new_tokens=80, temperature=1.0, top_p=0.95),
        complete_frame("Workers", max_new_tokens=50, temperature=0.8, top_k=30),
    ],
)
def test_deltas_concatenate_to_the_stored_text(api: Api, stack: LocalStack, frame: Frame) -> None:
    request_id, events = run(lambda: stream_one(stack, frame))

    stored = api.wait(request_id)["output"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert text_of(events) == stored["text"]
    assert "\ufffd" not in "".join(e["output"]["text"] for e in events[:-1])
    final = events[-1]["output"]
    assert final["finished"] is True
    assert final["num_completion_tokens"] == stored["num_completion_tokens"]
    assert final["num_prompt_tokens"] == stored["num_prompt_tokens"]
    assert all(not e["output"]["finished"] for e in events[:-1])


def test_stop_sequences_cut_the_stream_exactly(api: Api, stack: LocalStack) -> None:
    full = api.wait(api.submit({"prompt": "The river", "max_new_tokens": 40, "temperature": 0}))
    stop = full["output"]["text"].split()[3]
    frame = complete_frame("The river", max_new_tokens=40, temperature=0, stop_sequences=[stop])
    request_id, events = run(lambda: stream_one(stack, frame))
    expected = full["output"]["text"][: full["output"]["text"].index(stop)]
    assert text_of(events) == expected == api.wait(request_id)["output"]["text"]


def test_log_probs_stream_one_token_per_event(api: Api, stack: LocalStack) -> None:
    frame = complete_frame(
        "The mill", max_new_tokens=12, temperature=0, return_token_log_probs=True
    )
    request_id, events = run(lambda: stream_one(stack, frame))
    stored = api.wait(request_id)["output"]
    tokens = [e["output"]["token"] for e in events if e["output"]["token"]]
    assert len(tokens) == stored["num_completion_tokens"] == 12
    assert tokens == stored["tokens"]
    assert all(t["log_prob"] <= 0 for t in tokens)
    assert text_of(events) == stored["text"]


def test_disconnect_mid_stream_job_still_succeeds(api: Api, stack: LocalStack) -> None:
    async def start_and_drop() -> str:
        async with aiohttp.ClientSession() as session:
            socket = await connect(session, stack)
            await socket.send(complete_frame("The river", max_new_tokens=1500, temperature=0))
            ack = await socket.ack()
            await socket.events(ack["request_id"], stop_after=2)
            await socket.ws.close()
            return str(ack["request_id"])

    request_id = run(start_and_drop)
    job = api.wait(request_id, timeout=90)
    assert job["status"] == "SUCCEEDED"
    assert job["output"]["num_completion_tokens"] == 1500
    errors = [
        line
        for line in stack.worker_log(0).read_text().splitlines()
        if request_id in line and '"level": "ERROR"' in line
    ]
    assert errors == []


def test_resume_with_from_seq_has_no_gap_and_no_duplicate(api: Api, stack: LocalStack) -> None:
    async def drop_then_resume() -> tuple[str, list[Frame], list[Frame]]:
        async with aiohttp.ClientSession() as session:
            first = await connect(session, stack)
            await first.send(complete_frame("The river", max_new_tokens=1200, temperature=0))
            ack = await first.ack()
            request_id = ack["request_id"]
            before = await first.events(request_id, stop_after=3)
            await first.ws.close()

            second = await connect(session, stack)
            next_seq = before[-1]["seq"] + 1
            await second.send(
                {"action": "subscribe", "request_id": request_id, "from_seq": next_seq}
            )
            resumed = await second.ack()
            assert resumed["type"] == "accepted" and resumed["from_seq"] == next_seq
            after = await second.events(request_id)
            await second.ws.close()
            return request_id, before, after

    request_id, before, after = run(drop_then_resume)
    events = before + after
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert text_of(events) == api.wait(request_id)["output"]["text"]


def test_two_subscribers_see_the_same_events(api: Api, stack: LocalStack) -> None:
    async def two() -> tuple[list[Frame], list[Frame]]:
        async with aiohttp.ClientSession() as session:
            author = await connect(session, stack)
            watcher = await connect(session, stack)
            await author.send(complete_frame("The wheel", max_new_tokens=600, temperature=0.7))
            ack = await author.ack()
            await watcher.send({"action": "subscribe", "request_id": ack["request_id"]})
            assert (await watcher.ack())["type"] == "accepted"
            mine, theirs = await asyncio.gather(
                author.events(ack["request_id"]), watcher.events(ack["request_id"])
            )
            await author.ws.close()
            await watcher.ws.close()
            return mine, theirs

    mine, theirs = run(two)
    assert mine == theirs
    assert [e["seq"] for e in mine] == list(range(len(mine)))


def test_subscribing_to_a_running_http_job_gets_the_rest_live(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    # Nobody follows this job until it has streamed a while: the worker finds the new
    # subscriber through its shared check of all its running jobs, not a query per job.
    request_id = api.submit({"prompt": "The mill", "max_new_tokens": 3000, "temperature": 0})
    table = stack.resources.table_name if stack.resources else ""
    deadline = time.monotonic() + 30
    while not aws.dynamodb.query(**stream_table.query_chunks(table, request_id)).get("Items"):
        assert time.monotonic() < deadline, "the job never stored its first event"
        time.sleep(0.02)

    async def follow() -> tuple[dict[str, Any], float, list[Frame]]:
        async with aiohttp.ClientSession() as session:
            socket = await connect(session, stack)
            await socket.send({"action": "subscribe", "request_id": request_id, "from_seq": 0})
            ack = await socket.ack()
            await socket.events(request_id, stop_after=1)
            first_event_at = time.time()
            events = await socket.events(request_id)
            await socket.ws.close()
            return ack, first_event_at, events

    ack, first_event_at, events = run(follow)
    assert ack["status"] == "RUNNING"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert text_of(events) == api.wait(request_id)["output"]["text"]
    record = aws.dynamodb.get_item(**job_table.get_job(table, request_id))["Item"]
    assert first_event_at < float(record["finished_at"]["N"])  # live, not a replay at the end
    assert record["subscriptions"]["N"] == "1"
    subscriptions = aws.dynamodb.query(**stream_table.query_subscriptions(table, request_id))[
        "Items"
    ]
    assert [s["attached_by"]["S"] for s in subscriptions] != [stream_table.HANDLER_ATTACHMENT]


async def replay(stack: LocalStack, request_id: str) -> list[Frame]:
    """Every event of a job that SUCCEEDED, subscribed to from seq 0."""
    async with aiohttp.ClientSession() as session:
        socket = await connect(session, stack)
        await socket.send({"action": "subscribe", "request_id": request_id, "from_seq": 0})
        assert (await socket.ack())["status"] == "SUCCEEDED"
        events = await socket.events(request_id)
        await socket.ws.close()
        return events


def test_subscribe_to_a_finished_http_job_replays_everything(api: Api, stack: LocalStack) -> None:
    request_id = api.submit({"prompt": "Water", "max_new_tokens": 30, "temperature": 0})
    stored = api.wait(request_id)["output"]

    events = run(functools.partial(replay, stack, request_id))
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert text_of(events) == stored["text"]
    assert events[-1]["output"]["finished"] is True


def test_a_short_job_nobody_follows_stores_its_stream_in_one_event(
    api: Api, stack: LocalStack
) -> None:
    """Unfollowed, a job's events wait for the next unfollowed flush (every 2 s on a clock all
    jobs share) instead of its first token going out at once: one that ends before that flush
    stores one event, with all of its text. A job can straddle a flush, so of five short jobs
    two storing one event is enough (the first event at once would make it none)."""

    single = 0
    for n in range(5):
        request_id = api.submit({"prompt": f"Rain {n}", "max_new_tokens": 6, "temperature": 0})
        stored = api.wait(request_id)["output"]
        assert stored["num_completion_tokens"] >= 2  # else one event proves nothing
        events = run(functools.partial(replay, stack, request_id))
        assert text_of(events) == stored["text"]
        single += len(events) == 1
    assert single >= 2


def test_subscribing_to_another_keys_job_is_refused(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    assert stack.resources is not None
    other = "hr-test-other-streaming-key"
    aws.dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, other, name="other", now=0.0)
    )
    request_id = api.submit({"prompt": "Water", "max_new_tokens": 3})

    async def peek() -> Frame:
        async with aiohttp.ClientSession() as session:
            socket = await connect(session, stack, key=other)
            await socket.send({"action": "subscribe", "request_id": request_id})
            answer = await socket.ack()
            await socket.ws.close()
            return answer

    answer = run(peek)
    assert answer["error"]["status_code"] == 404, answer


def test_bad_key_is_refused_at_connect(stack: LocalStack) -> None:
    async def attempt() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                await session.ws_connect(ws_url(stack), headers={"x-api-key": "wrong"})
            except aiohttp.WSServerHandshakeError as e:
                return e.status
            return 101

    assert run(attempt) == 401


@pytest.mark.parametrize(
    ("raw", "expected_status", "mentions"),
    [
        ("not json", 400, "complete, subscribe"),
        (json.dumps({"action": "dance"}), 400, "complete, subscribe"),
        (json.dumps({"hello": 1}), 400, "action"),
        (json.dumps({"action": "complete", "model": DEV_MODEL_NAME}), 400, "prompt"),
        (
            json.dumps({"action": "complete", "model": DEV_MODEL_NAME, "prompt": "x", "top_p": 3}),
            400,
            "top_p",
        ),
        (json.dumps({"action": "subscribe"}), 400, "request_id"),
        (json.dumps({"action": "subscribe", "request_id": "nope"}), 404, "not found"),
    ],
)
def test_bad_frames_get_an_error_event_and_the_connection_survives(
    api: Api, stack: LocalStack, raw: str, expected_status: int, mentions: str
) -> None:
    async def send_bad_then_good() -> tuple[Frame, list[Frame]]:
        async with aiohttp.ClientSession() as session:
            socket = await connect(session, stack)
            await socket.ws.send_str(raw)
            error = await socket.next_frame()
            await socket.send(complete_frame("Still here", max_new_tokens=5, temperature=0))
            ack = await socket.ack()
            events = await socket.events(ack["request_id"])
            await socket.ws.close()
            return error, events

    error, events = run(send_bad_then_good)
    assert error["output"] is None
    assert error["error"]["status_code"] == expected_status, error
    assert mentions in error["error"]["content"]["error"]
    assert events[-1]["output"]["finished"] is True
