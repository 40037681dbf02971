"""WebSocket frame fuzzing against a running stack: every frame gets an answer (a reply or a
close), the connection stays usable after a bad frame, jobs stream to their end, and the
gateway survives dropped connections and 50 concurrent streams."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from typing import Any

import aiohttp

from tests.suites.fuzz.tally import Tally
from tests.suites.fuzz.ws_cases import (
    BINARY,
    UNKNOWN_ID,
    Frame,
    closing_frames,
    complete,
    job_frames,
    malformed_frames,
    masked_frame,
    raw_connect,
    reset,
    subscribe,
)

REQUEST_ID = re.compile(rb'"request_id": ?"([0-9a-f-]{36})"')
REPLY_SECONDS = 15.0
STREAM_SECONDS = 180.0


def is_last(frame: Any) -> bool:
    return isinstance(frame, dict) and bool(
        frame.get("error") or (frame.get("output") or {}).get("finished")
    )


class WsFuzzer:
    def __init__(self, ws_url: str, api_key: str, other_key: str, tally: Tally) -> None:
        self.ws_url = ws_url
        self.api_key = api_key
        self.other_key = other_key
        self.tally = tally
        # Jobs started on connections that were then dropped: they must still end SUCCEEDED.
        self.dropped_jobs: list[tuple[str, str]] = []

    async def run_all(self, own_job: str | None, *, streams: int) -> None:
        async with aiohttp.ClientSession() as session:
            for case, frame in malformed_frames():
                await self.probe(session, case, frame)
            for case, frame in closing_frames():
                await self.probe(session, case, frame, may_close=True)
            for case, text in job_frames():
                await self.probe(session, case, text, follow=True)
            if own_job is not None:
                await self.other_keys_job(session, own_job)
            await asyncio.to_thread(self.dropped_connections)
            await self.probe(session, "a new connection after the drops", subscribe(UNKNOWN_ID))
            await self.concurrent_streams(session, streams)

    async def probe(
        self,
        session: aiohttp.ClientSession,
        case: str,
        frame: Frame,
        *,
        follow: bool = False,
        may_close: bool = False,
        key: str | None = None,
    ) -> list[Any]:
        """Send one frame on a fresh connection; returns the frames it got back."""
        try:
            ws = await session.ws_connect(self.ws_url, headers={"x-api-key": key or self.api_key})
        except aiohttp.WSServerHandshakeError as e:
            self.tally.unanswered.append(f"{case}: handshake refused ({e.status})")
            return []
        async with ws:
            await self._send(ws, frame)
            frames = await self._read(ws, case, until_last=follow, may_close=may_close)
            if not ws.closed:  # a bad frame must leave the connection usable
                await self._send(ws, subscribe(UNKNOWN_ID))
                await self._read(ws, f"{case}, then a frame on the same connection")
            return frames

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, frame: Frame) -> None:
        self.tally.ws_frames += 1
        if isinstance(frame, str):
            await ws.send_str(frame)
        elif isinstance(frame, bytes):
            await ws.send_frame(frame, aiohttp.WSMsgType(BINARY))
        else:
            await ws.send_frame(frame[0], aiohttp.WSMsgType(frame[1]))

    async def _read(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        case: str,
        *,
        until_last: bool = False,
        may_close: bool = False,
    ) -> list[Any]:
        """The first answer, or (until_last) every frame up to the stream's last event."""
        frames: list[Any] = []
        seconds = STREAM_SECONDS if until_last else REPLY_SECONDS
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = await ws.receive(timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            if message.type is aiohttp.WSMsgType.TEXT:
                frames.append(self._reply(case, message.data, frames))
                if not until_last or any(is_last(f) for f in frames):
                    return frames
                continue
            if message.type is aiohttp.WSMsgType.BINARY:
                self.tally.non_json_errors.append(f"{case}: binary frame {message.data[:40]!r}")
                return frames
            self.tally.ws_closes[f"{case}: closed {ws.close_code}"] += 1
            if not may_close:
                self.tally.unanswered.append(f"{case}: connection closed ({ws.close_code})")
            return frames
        what = "no last event" if frames else "no answer"
        self.tally.unanswered.append(f"{case}: {what} within {seconds:g}s")
        return frames

    def _reply(self, case: str, data: str, earlier: list[Any]) -> Any:
        frame = self.tally.reply(case, data)
        acked = any(isinstance(f, dict) and f.get("type") == "accepted" for f in earlier)
        status = ((frame or {}).get("error") or {}).get("status_code") or 0
        if acked and 400 <= status < 500:
            self.tally.rejected_late.append(f"{case}: acknowledged, then an input error {status}")
        return frame

    async def other_keys_job(self, session: aiohttp.ClientSession, request_id: str) -> None:
        case = "subscribe to another key's job"
        frames = await self.probe(session, case, subscribe(request_id), key=self.other_key)
        status = next(
            ((f.get("error") or {}).get("status_code") for f in frames if isinstance(f, dict)),
            None,
        )
        if status != 404:
            self.tally.wrong_answers.append(f"{case}: answered {json.dumps(frames)[:160]}")

    def dropped_connections(self) -> None:
        """Connections that end without a closing handshake: after a complete, mid-stream,
        and in the middle of a frame."""
        cases: list[tuple[str, bytes]] = [
            ("drop right after a complete", masked_frame(complete(prompt="Dropped").encode())),
            (
                "drop mid-stream",
                masked_frame(complete(prompt="Dropped", max_new_tokens=64).encode()),
            ),
            ("drop mid-frame", masked_frame(complete(prompt="x" * 400).encode())[:60]),
        ]
        for case, data in cases:
            try:
                sock = raw_connect(self.ws_url, self.api_key)
            except OSError as e:
                self.tally.unanswered.append(f"{case}: {e}")
                continue
            self.tally.ws_frames += 1
            sock.sendall(data)
            if case == "drop mid-stream":
                self._note_dropped_job(case, sock)
            reset(sock)

    def _note_dropped_job(self, case: str, sock: socket.socket) -> None:
        """Read until the ack (or a first event) names the job, then leave it to run on."""
        received = b""
        deadline = time.monotonic() + REPLY_SECONDS
        while (found := REQUEST_ID.search(received)) is None and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
        self.tally.transcript.append(f"{case} -> {received[:200]!r}")
        if found is None:
            self.tally.unanswered.append(f"{case}: no request_id before the drop {received[:80]!r}")
        else:
            self.dropped_jobs.append((case, found.group(1).decode()))

    async def concurrent_streams(self, session: aiohttp.ClientSession, count: int) -> None:
        async def one(index: int) -> None:
            frame = complete(prompt=f"Stream {index}", max_new_tokens=16, temperature=0.7)
            await self.probe(session, f"concurrent stream {index}", frame, follow=True)

        await asyncio.gather(*(one(i) for i in range(count)))
