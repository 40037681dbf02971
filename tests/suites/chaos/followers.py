"""Followers of chosen jobs over the WebSocket API, recording every frame as delivered.

One asyncio loop in a thread holds all connections. A follower keeps reading after the last
event until the run stops, so a second final event (a zombie worker's) is seen too. If its
connection drops before the end, it reconnects and subscribes from the next seq, the way
README "Streaming over WebSocket" tells clients to."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from headrace.dev.model import DEV_MODEL_NAME
from tests.suites.chaos.workload import Door, JobSpec

Frame = dict[str, Any]
ACK_TIMEOUT_SECONDS = 30.0


def is_last(frame: Frame) -> bool:
    return bool(frame.get("error") or (frame.get("output") or {}).get("finished"))


@dataclass
class Followed:
    index: int
    door: Door
    request_id: str | None = None
    frames: list[Frame] = field(default_factory=list)  # stream events (they carry a seq)
    replies: list[Frame] = field(default_factory=list)  # acks and error replies
    problems: list[str] = field(default_factory=list)  # drops, refusals, unreadable frames

    def next_seq(self) -> int:
        seqs = {int(f["seq"]) for f in self.frames}
        seq = 0
        while seq in seqs:
            seq += 1
        return seq

    def has_last(self) -> bool:
        return any(is_last(f) for f in self.frames)


class FollowerHub:
    def __init__(self, ws_url: str, api_key: str) -> None:
        self.ws_url = ws_url
        self.api_key = api_key
        self.followed: list[Followed] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._open: set[aiohttp.ClientWebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def complete(self, spec: JobSpec) -> Followed:
        """Submit over WebSocket and follow; returns once acknowledged (or refused, or 30 s)."""
        frame = {"action": "complete", "model": DEV_MODEL_NAME, **spec.body}
        return self._follow(Followed(spec.index, spec.door), frame)

    def subscribe(self, spec: JobSpec, request_id: str) -> Followed:
        record = Followed(spec.index, spec.door, request_id=request_id)
        return self._follow(record, {"action": "subscribe", "request_id": request_id})

    def _follow(self, record: Followed, frame: Frame) -> Followed:
        with self._lock:
            self.followed.append(record)
        acked: concurrent.futures.Future[bool] = concurrent.futures.Future()
        asyncio.run_coroutine_threadsafe(self._spawn(record, frame, acked), self._loop).result(10)
        try:
            if not acked.result(ACK_TIMEOUT_SECONDS):
                record.problems.append("refused: " + json.dumps(record.replies[-1:]))
        except TimeoutError:
            record.problems.append(f"no ack within {ACK_TIMEOUT_SECONDS:g}s")
        return record

    async def _spawn(
        self, record: Followed, frame: Frame, acked: concurrent.futures.Future[bool]
    ) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        task = asyncio.create_task(self._run(record, frame, acked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, record: Followed, frame: Frame, acked: concurrent.futures.Future[bool]
    ) -> None:
        while not self._stopping.is_set():
            await self._connection(record, frame, acked)
            if self._stopping.is_set() or record.has_last() or record.request_id is None:
                break
            frame = {
                "action": "subscribe",
                "request_id": record.request_id,
                "from_seq": record.next_seq(),
            }
            await asyncio.sleep(0.5)
        if not acked.done():
            acked.set_result(False)

    async def _connection(
        self, record: Followed, frame: Frame, acked: concurrent.futures.Future[bool]
    ) -> None:
        assert self._session is not None
        try:
            ws = await self._session.ws_connect(self.ws_url, headers={"x-api-key": self.api_key})
        except (aiohttp.ClientError, OSError) as e:
            record.problems.append(f"connect failed: {e!r}")
            await asyncio.sleep(1.0)
            return
        self._open.add(ws)
        try:
            await ws.send_str(json.dumps(frame))
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    record.problems.append(f"non-text frame {message.type.name}")
                    continue
                self._take(record, json.loads(message.data), acked)
        except (aiohttp.ClientError, OSError, ValueError) as e:
            record.problems.append(f"connection error: {e!r}")
        finally:
            self._open.discard(ws)
            await ws.close()
        if not self._stopping.is_set() and not record.has_last():
            record.problems.append(f"connection closed early ({ws.close_code})")

    @staticmethod
    def _take(record: Followed, data: Frame, acked: concurrent.futures.Future[bool]) -> None:
        if "seq" in data and data.get("seq") is not None:
            record.frames.append(data)
            return
        record.replies.append(data)
        if data.get("type") == "accepted":
            record.request_id = str(data["request_id"])
            if not acked.done():
                acked.set_result(True)
        elif data.get("error") and not acked.done():
            acked.set_result(False)

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop the loop."""

        async def close_all() -> None:
            self._stopping.set()
            for ws in list(self._open):
                await ws.close()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in list(self._tasks):
                task.cancel()
            if self._session is not None:
                await self._session.close()

        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout + 5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
