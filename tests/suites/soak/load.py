"""The soak's steady load: jobs submitted at a fixed rate by every door, each one then polled
over HTTP (GET, as a client does) until it is final. Only counts and latencies are kept."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from headrace.core import routes
from headrace.dev.model import DEV_MODEL_NAME
from tests.suites.chaos.traffic import FINAL, http_call
from tests.suites.soak.examples import keep_example
from tests.suites.soak.follow import StreamFollowers
from tests.suites.soak.workload import Door, door_for, job_body

POLL_SECONDS = 1.0


@dataclass
class Tally:
    submitted: Counter[str] = field(default_factory=Counter)  # accepted, by door
    refused: Counter[str] = field(default_factory=Counter)  # why: "HTTP 503", "ws refused", ...
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # final but not SUCCEEDED, by reason
    lost: int = 0  # 404 after an accept
    latencies: list[float] = field(default_factory=list)  # finished_at - created_at, seconds
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind -> request ids

    def example(self, kind: str, detail: str) -> None:
        keep_example(self.examples, kind, detail)


def _seconds_between(view: dict[str, Any]) -> float | None:
    try:
        created = dt.datetime.fromisoformat(str(view["created_at"]))
        finished = dt.datetime.fromisoformat(str(view["finished_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - created).total_seconds()


class Load:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        followers: StreamFollowers,
        *,
        follow_every: int,
        sync_every: int,
        threads: int,
        seed: int,
        on_done: Callable[[str], None] = lambda request_id: None,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.followers = followers
        self.follow_every = follow_every
        self.sync_every = sync_every
        # Called with each job once it is final and no follower reads its stream any more.
        self.on_done = on_done
        self._holds: dict[str, int] = {}  # request id -> releases still to come (see _release)
        followers.on_closed = self._release
        self.tally = Tally()
        self._rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="soak-submit")
        self._pending: dict[str, float] = {}  # request id -> when to poll it next (monotonic)
        self._in_flight = 0  # submissions not answered yet
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="soak-poll", daemon=True)

    def start(self) -> None:
        self._poller.start()

    def submit(self, index: int) -> None:
        """Hand job `index` to a submitting thread (returns at once)."""
        door = door_for(index, follow_every=self.follow_every, sync_every=self.sync_every)
        with self._lock:
            body = job_body(self._rng)
            self._in_flight += 1
        self._pool.submit(self._one, door, body)

    def pending(self) -> int:
        """Jobs submitted and not yet seen final (or not yet answered)."""
        with self._lock:
            return len(self._pending) + self._in_flight

    def _one(self, door: Door, body: dict[str, Any]) -> None:
        try:
            request_id, refusal = self._send(door, body)
        except OSError as e:
            request_id, refusal = None, f"connection error {type(e).__name__}"
        with self._lock:
            self._in_flight -= 1
            if request_id is None:
                self.tally.refused[refusal or "no request id"] += 1
                self.tally.example(f"refused at submit ({door}), {refusal}", "-")
                return
            self.tally.submitted[door] += 1
            self._pending[request_id] = time.monotonic() + POLL_SECONDS
            # Seen final, and (followed) its connection closed: either may come first.
            followed = door in ("ws-complete", "ws-subscribe")
            self._holds[request_id] = self._holds.get(request_id, 0) + (2 if followed else 1)

    def _send(self, door: Door, body: dict[str, Any]) -> tuple[str | None, str | None]:
        if door == "ws-complete":
            request_id = self.followers.complete(body)
            return request_id, None if request_id else "ws: not acknowledged"
        path = routes.COMPLETIONS_SYNC if door == "sync" else routes.COMPLETIONS_ASYNC
        query = f"?model_endpoint_name={DEV_MODEL_NAME}"
        status, answer = http_call(self.base_url, self.api_key, "POST", path + query, body)
        # The sync route names the job in every answer once it exists (200, 202 not done yet,
        # 500 failed): its final state is read back like any other's.
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if request_id is None:
            return None, f"HTTP {status}"
        if door == "ws-subscribe" and not self.followers.subscribe(str(request_id)):
            return str(request_id), None  # the follower counted the refusal; the job goes on
        return str(request_id), None

    def _poll_loop(self) -> None:
        while not self._stopping.wait(POLL_SECONDS / 4):
            now = time.monotonic()
            with self._lock:
                due = [r for r, at in self._pending.items() if at <= now]
            for request_id in due:
                self._poll(request_id)

    def _poll(self, request_id: str) -> None:
        path = routes.COMPLETION.format(request_id=request_id)
        try:
            status, view = http_call(self.base_url, self.api_key, "GET", path)
        except OSError:
            status, view = 0, None
        if status == 200 and isinstance(view, dict) and view.get("status") in FINAL:
            with self._lock:
                del self._pending[request_id]
                self._final(request_id, view)
            self._release(request_id)
            return
        with self._lock:
            if status == 404:
                del self._pending[request_id]
                self.tally.lost += 1
                self.tally.example("404 after it was accepted", request_id)
            else:
                self._pending[request_id] = time.monotonic() + POLL_SECONDS

    def _release(self, request_id: str) -> None:
        with self._lock:
            left = self._holds.get(request_id, 0) - 1
            if left:
                self._holds[request_id] = left
                return
            del self._holds[request_id]
        self.on_done(request_id)

    def _final(self, request_id: str, view: dict[str, Any]) -> None:
        if view["status"] != "SUCCEEDED":
            error = view.get("error") or {}
            reason = f"{view['status']} {error.get('type', '')}".strip()
            self.tally.failed[reason] += 1
            self.tally.example(f"{reason} {str(error.get('message', ''))[:80]}", request_id)
            return
        self.tally.succeeded += 1
        seconds = _seconds_between(view)
        if seconds is not None:
            self.tally.latencies.append(seconds)

    def drain(self, timeout: float) -> list[str]:
        """Wait up to `timeout` for every submitted job to be seen final; the ids still not."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.5)
        with self._lock:
            return sorted(self._pending)

    def stop(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._poller.is_alive():
            self._poller.join(10)
