"""Following jobs over the WebSocket API the way a client does: connect, `complete` or
`subscribe`, read to the last event, disconnect.

Unlike the chaos followers (which hold every connection to the end of the run, to see a second
final event), each connection here closes after its job's last event, so the
connect/subscribe/disconnect path runs all through the soak; and only counts are kept, so the
suite's own memory stays flat."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from headrace.dev.model import DEV_MODEL_NAME
from tests.suites.chaos.followers import ACK_TIMEOUT_SECONDS, is_last
from tests.suites.soak.examples import keep_example


@dataclass
class FollowTally:
    opened: int = 0
    completed: int = 0  # every seq from 0 to a last event
    problems: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> request ids

    def problem(self, kind: str, request_id: str | None) -> None:
        self.problems[kind] += 1
        keep_example(self.examples, f"followed stream, {kind}", str(request_id))


class StreamFollowers:
    """One asyncio loop in a thread holds every open connection."""

    def __init__(self, ws_url: str, api_key: str) -> None:
        self.ws_url = ws_url
        self.api_key = api_key
        self.tally = FollowTally()
        # Called (from the loop's thread) with the request id of each stream once its
        # connection is closed: the job's items may go.
        self.on_closed: Callable[[str], None] = lambda request_id: None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        self._thread.start()

    @property
    def open_now(self) -> int:
        return len(self._tasks)

    def complete(self, body: dict[str, Any]) -> str | None:
        """Submit over WebSocket; the request id once acknowledged, None if refused."""
        return self._follow({"action": "complete", "model": DEV_MODEL_NAME, **body}, None)

    def subscribe(self, request_id: str) -> bool:
        frame = {"action": "subscribe", "request_id": request_id}
        return self._follow(frame, request_id) is not None

    def _follow(self, frame: dict[str, Any], request_id: str | None) -> str | None:
        acked: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        # A submitting thread may still get here while the run stops: it follows nothing.
        if self._stopping.is_set():
            return None
        spawn = self._spawn(frame, request_id, acked)
        try:
            asyncio.run_coroutine_threadsafe(spawn, self._loop).result(10)
        except (RuntimeError, TimeoutError):  # the loop stopped or closed since
            spawn.close()
            return None
        try:
            return acked.result(ACK_TIMEOUT_SECONDS)
        except TimeoutError:
            self._note(f"no ack within {ACK_TIMEOUT_SECONDS:g}s", request_id)
            return None

    def _note(self, kind: str, request_id: str | None) -> None:
        with self._lock:
            self.tally.problem(kind, request_id)

    async def _spawn(
        self,
        frame: dict[str, Any],
        request_id: str | None,
        acked: concurrent.futures.Future[str | None],
    ) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        task = asyncio.create_task(self._connection(frame, request_id, acked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(
        self,
        frame: dict[str, Any],
        request_id: str | None,
        acked: concurrent.futures.Future[str | None],
    ) -> None:
        assert self._session is not None
        seqs: list[int] = []
        problem: str | None = "closed before the last event"
        try:
            async with self._session.ws_connect(
                self.ws_url, headers={"x-api-key": self.api_key}
            ) as ws:
                with self._lock:
                    self.tally.opened += 1
                await ws.send_str(json.dumps(frame))
                request_id, problem = await self._read(ws, request_id, seqs, acked)
        except (aiohttp.ClientError, OSError, ValueError) as e:
            problem = f"connection error {type(e).__name__}"
        finally:
            if not acked.done():
                acked.set_result(None)
        if problem is not None:
            self._note(problem, request_id)
        elif seqs != list(range(len(seqs))):
            self._note("seq gap or repeat", request_id)
        else:
            with self._lock:
                self.tally.completed += 1
        if request_id is not None:
            self.on_closed(request_id)

    async def _read(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        request_id: str | None,
        seqs: list[int],
        acked: concurrent.futures.Future[str | None],
    ) -> tuple[str | None, str | None]:
        """Read until the last event, collecting each event's seq; the request id, and what went
        wrong if the connection ended first."""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                self._note(f"non-text frame {message.type.name}", request_id)
                continue
            data = json.loads(message.data)
            if data.get("seq") is not None:
                seqs.append(int(data["seq"]))
                if is_last(data):
                    return request_id, None
            elif data.get("type") == "accepted":
                request_id = str(data["request_id"])
                if not acked.done():
                    acked.set_result(request_id)
            elif data.get("error"):
                return request_id, "refused: " + json.dumps(data)[:100]
        return request_id, "closed before the last event"

    def stop(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` for open streams to end, then close the rest and the loop."""
        self._stopping.set()

        async def close_all() -> None:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in list(self._tasks):
                self._note("still open at the end", None)
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)
            if self._session is not None:
                await self._session.close()

        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout + 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
