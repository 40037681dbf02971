"""The client's WebSocket streaming: parsing, ack buffering, resume without gap or duplicate.

Against FakeStreamServer (tests/fake_ws_server.py), a stand-in for the server side until the
real WebSocket API lands; end-to-end streaming tests against the local stack come with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from headrace import BadRequestError, Completion, HeadraceConnectionError, NotFoundError
from headrace.client import (
    ClientConfig,
    CompletionStreamResponse,
    configure,
    reset_configuration,
)
from headrace.client._stream import StreamTracker, stream_events
from headrace.client.errors import UnauthorizedError
from headrace.core.contracts import StreamError, StreamErrorContent, StreamEvent
from tests.e2e.fake_ws_server import FakeStreamServer, text_events

PIECES = ["The", " river", " turns", " the", " wheel", "."]
KEY = "hr-test-key"


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HEADRACE_HOME", str(tmp_path))
    for name in ("HEADRACE_BASE_URL", "HEADRACE_WS_URL", "HEADRACE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    yield
    reset_configuration()


def use(server: FakeStreamServer) -> None:
    configure(base_url="http://127.0.0.1:9", ws_url=server.url, api_key=KEY)


async def collect(
    stream: AsyncIterator[CompletionStreamResponse],
) -> list[CompletionStreamResponse]:
    return [event async for event in stream]


def assert_whole(events: list[CompletionStreamResponse]) -> None:
    assert [e.seq for e in events] == list(range(len(PIECES)))
    assert "".join(e.output.text for e in events if e.output) == "".join(PIECES)
    assert events[-1].output is not None and events[-1].output.finished
    assert not any(e.output and e.output.finished for e in events[:-1])


def test_acreate_streams_events_that_arrive_before_the_ack() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES), api_key=KEY, events_before_ack=2)
    with server.running():
        use(server)
        stream = asyncio.run(
            Completion.acreate("tiny", "The", max_new_tokens=6, temperature=0, stream=True)
        )
        events = asyncio.run(collect(stream))
    assert_whole(events)
    assert {e.request_id for e in events} == {"req-1"}
    assert events[-1].output is not None and events[-1].output.num_completion_tokens == 6
    assert server.frames == [
        {"action": "complete", "model": "tiny", "prompt": "The", "max_new_tokens": 6,
         "temperature": 0}
    ]  # fmt: skip
    assert server.headers[0]["x-api-key"] == KEY
    assert server.queries[0] == {"api_key": KEY}


@pytest.mark.parametrize("cleanly", [False, True], ids=["broken-tcp", "close-frame"])
def test_a_dropped_stream_resumes_from_the_next_seq_without_duplicates(cleanly: bool) -> None:
    server = FakeStreamServer(
        text_events("req-1", PIECES),
        drop_after_seqs=[1, 3],
        drop_cleanly=cleanly,
        replay_overlap=2,  # the server replays seen events: the client drops them
    )
    with server.running():
        use(server)
        events = list(Completion.create("tiny", "The", stream=True))
    assert_whole(events)
    assert [f["action"] for f in server.frames] == ["complete", "subscribe", "subscribe"]
    assert [f.get("from_seq") for f in server.frames[1:]] == [2, 4]
    assert {f.get("request_id") for f in server.frames[1:]} == {"req-1"}


def test_events_out_of_order_are_handed_out_in_seq_order() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES), send_order=[0, 2, 1, 4, 3, 5])
    with server.running():
        use(server)
        events = list(Completion.create("tiny", "The", stream=True))
    assert_whole(events)
    assert len(server.frames) == 1


def test_an_error_event_mid_stream_ends_the_stream_with_error_set() -> None:
    events = text_events("req-1", PIECES)[:3]
    failure = StreamError(status_code=500, content=StreamErrorContent(error="boom", timestamp="t"))
    events.append(StreamEvent(request_id="req-1", seq=3, error=failure))
    server = FakeStreamServer(events)
    with server.running():
        use(server)
        got = list(Completion.create("tiny", "The", stream=True))
    assert [e.seq for e in got] == [0, 1, 2, 3]
    assert got[-1].output is None and got[-1].error is not None
    assert got[-1].error.status_code == 500 and got[-1].error.content.error == "boom"


def test_a_rejected_request_raises_the_mapped_error() -> None:
    server = FakeStreamServer([], reject=(400, "temperature: must be <= 1"))
    with server.running():
        use(server)
        with pytest.raises(BadRequestError) as caught:
            list(Completion.create("tiny", "The", temperature=0.5, stream=True))
    assert caught.value.status_code == 400
    assert caught.value.detail == "temperature: must be <= 1"


def test_a_refused_handshake_is_unauthorized() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES), api_key="another key")
    with server.running():
        use(server)
        with pytest.raises(UnauthorizedError):
            list(Completion.create("tiny", "The", stream=True))


def test_no_websocket_api_is_a_clear_not_found() -> None:
    server = FakeStreamServer([])
    with server.running():
        configure(ws_url=server.url.replace("/ws", "/nowhere"))
        with pytest.raises(NotFoundError, match="no WebSocket API at ws://"):
            list(Completion.create("tiny", "The", stream=True))


def test_reconnects_are_bounded_and_the_error_says_how_to_resume() -> None:
    server = FakeStreamServer(
        text_events("req-1", PIECES), drop_after_seqs=[0, 1, 1, 1, 1, 1, 1], replay_overlap=1
    )
    with server.running():
        use(server)
        seen: list[int | None] = []
        with pytest.raises(HeadraceConnectionError) as caught:
            for event in Completion.create("tiny", "The", stream=True):
                seen.append(event.seq)
    assert seen == [0, 1]
    assert caught.value.request_id == "req-1"
    assert "stream_existing('req-1', from_seq=2)" in str(caught.value)


def test_stream_existing_subscribes_from_the_given_seq() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES))
    with server.running():
        use(server)
        got = list(Completion.stream_existing("req-1", from_seq=4))
    assert [e.seq for e in got] == [4, 5]
    assert server.frames == [{"action": "subscribe", "request_id": "req-1", "from_seq": 4}]


def test_following_a_finished_job_from_past_its_end_ends_quietly() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES), ack_status="SUCCEEDED")
    with server.running():
        use(server)
        assert list(Completion.stream_existing("req-1", from_seq=6, timeout=30)) == []
        assert [e.seq for e in Completion.stream_existing("req-1", from_seq=5)] == [5]
    assert len(server.frames) == 2  # no resubscription


def test_breaking_out_of_a_sync_stream_closes_it() -> None:
    server = FakeStreamServer(text_events("req-1", PIECES))
    with server.running():
        use(server)
        stream = Completion.create("tiny", "The", stream=True)
        first = next(stream)
        stream.close()  # type: ignore[attr-defined]
    assert first.seq == 0


def test_nothing_to_reach_is_a_connection_error_naming_make_dev() -> None:
    nowhere = ClientConfig(base_url="http://127.0.0.1:9")  # nothing listens on port 9
    stream = stream_events(nowhere, complete={"prompt": "x"}, max_reconnects=1)
    with pytest.raises(HeadraceConnectionError, match="make dev"):
        asyncio.run(collect(stream))


# ---- the tracker alone ----------------------------------------------------------------------


def event(
    seq: int | None, text: str = "x", *, last: bool = False, rid: str = "r"
) -> dict[str, object]:
    output = {"text": text, "finished": last, "num_completion_tokens": 1}
    return {"request_id": rid, "seq": seq, "output": output, "error": None}


def test_tracker_buffers_by_request_id_until_the_ack() -> None:
    tracker = StreamTracker()
    assert tracker.on_frame(event(0, rid="other")) == []
    assert tracker.on_frame(event(1, "b")) == []
    assert tracker.on_frame(event(0, "a")) == []
    ack = {"type": "accepted", "action": "complete", "request_id": "r", "status": "QUEUED"}
    assert [e.output.text for e in tracker.on_frame(ack) if e.output] == ["a", "b"]
    assert tracker.request_id == "r" and tracker.pending == {}
    assert tracker.on_frame(event(0, rid="other")) == []  # not ours


def test_tracker_drops_seen_seqs_and_stops_after_the_last() -> None:
    tracker = StreamTracker("r", from_seq=2)
    assert tracker.on_frame(event(1)) == []
    assert [e.seq for e in tracker.on_frame(event(2))] == [2]
    assert tracker.on_frame(event(2)) == []
    assert tracker.on_frame(event(4, last=True)) == []  # held until 3 arrives
    assert [e.seq for e in tracker.on_frame(event(3))] == [3, 4]
    assert tracker.finished and tracker.next_seq == 5
    assert tracker.on_frame(event(5)) == []


def test_tracker_adopts_the_request_of_events_that_came_without_an_ack() -> None:
    tracker = StreamTracker()
    tracker.on_frame(event(0, "a"))
    tracker.adopt_pending()
    assert tracker.request_id == "r" and tracker.next_seq == 1


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"detail": "unknown API key", "status_code": 401}, UnauthorizedError),
        ({"request_id": None, "output": None, "error": {"status_code": 404,
          "content": {"error": "request r not found", "timestamp": "t"}}}, NotFoundError),
        ({"message": "Internal server error", "connectionId": "c", "requestId": "q"}, None),
    ],
)  # fmt: skip
def test_tracker_raises_rejections(frame: dict[str, object], error: type[Exception] | None) -> None:
    from headrace import ServerError

    with pytest.raises(error or ServerError):
        StreamTracker().on_frame(frame)
