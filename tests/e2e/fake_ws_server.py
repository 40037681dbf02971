"""FakeStreamServer: a test double of the WebSocket API's *server* side, for the client's
streaming tests while the real server is built elsewhere (end-to-end tests come with it).

It speaks the protocol of DESIGN.md and headrace.core.contracts: a `complete` or `subscribe` frame
is answered with a `WebSocketAck` and seq-numbered `StreamEvent` frames, and it misbehaves on
cue the way a real deployment can: events before the ack, connections that break mid-stream,
a resubscription replayed from a little before `from_seq` (duplicates), events out of order.
It runs on its own thread and event loop, so sync and async clients can both talk to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from headrace.core.contracts import StreamEvent, StreamOutput


def text_events(request_id: str, pieces: list[str], prompt_tokens: int = 3) -> list[StreamEvent]:
    """One event per piece; the last one finished, with the counts."""
    events = []
    for seq, piece in enumerate(pieces):
        last = seq == len(pieces) - 1
        output = StreamOutput(
            text=piece,
            finished=last,
            num_prompt_tokens=prompt_tokens if last else None,
            num_completion_tokens=seq + 1,
        )
        events.append(StreamEvent(request_id=request_id, seq=seq, output=output))
    return events


@dataclass
class FakeStreamServer:
    events: list[StreamEvent]
    request_id: str = "req-1"
    api_key: str | None = None  # when set, a handshake without it answers 401
    events_before_ack: int = 0  # how many events go out before the ack
    drop_after_seqs: list[int] = field(default_factory=list)  # break once after each of these
    drop_cleanly: bool = False  # a close frame rather than a broken TCP connection
    replay_overlap: int = 0  # a resubscription replays this many events before from_seq
    send_order: list[int] | None = None  # the order of seqs on the first connection
    reject: tuple[int, str] | None = None  # answer `complete` with this error, no id
    ack_status: str = "RUNNING"  # the job's status the ack reports
    # What it saw:
    frames: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    @contextmanager
    def running(self) -> Iterator[FakeStreamServer]:
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(self._app())
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.url = f"ws://127.0.0.1:{port}/ws"
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=main, name="fake-ws-server", daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        self.queries.append(dict(request.query))
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return web.json_response({"message": "Unauthorized"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        message = await ws.receive()
        frame = json.loads(message.data)
        self.frames.append(frame)
        first_connection = len(self.frames) == 1
        if frame["action"] == "complete":
            if self.reject is not None:
                status, detail = self.reject
                error = {"status_code": status, "content": {"error": detail, "timestamp": "t"}}
                await ws.send_json({"request_id": None, "output": None, "error": error})
                await ws.close()
                return ws
            start = 0
        else:
            start = max(frame["from_seq"] - self.replay_overlap, 0)
        ack = {
            "type": "accepted",
            "action": frame["action"],
            "request_id": self.request_id,
            "status": self.ack_status,
            "from_seq": frame.get("from_seq", 0),
        }
        order = self.send_order if first_connection and self.send_order else None
        pending = [self.events[i] for i in order] if order else self.events[start:]
        for sent, event in enumerate(pending):
            if sent == self.events_before_ack:
                await ws.send_json(ack)
            await ws.send_str(event.model_dump_json())
            if event.seq in self.drop_after_seqs:
                self.drop_after_seqs.remove(event.seq)
                await self._drop(request, ws)
                return ws
        if len(pending) <= self.events_before_ack:
            await ws.send_json(ack)
        if self.ack_status in ("SUCCEEDED", "FAILED", "CANCELLED"):
            async for _ in ws:  # a finished job: the replay was all; the socket stays open
                pass
            return ws
        if not pending or not pending[-1].is_last:
            await self._drop(request, ws)  # the stream broke off: the client resubscribes
            return ws
        await ws.close()
        return ws

    async def _drop(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        if self.drop_cleanly:
            await ws.close()
        elif request.transport is not None:
            request.transport.close()  # no close frame: the TCP connection just ends
