"""Stopping a job before its end: a cancel its owner asked for, or its deadline.

Each job the worker decodes has a `Halt`. A cancel is learned on the event loop: the worker's
one periodic BatchGetItem over all its running jobs (worker/stream_store.py SubscriberWatch,
every HEADRACE_CANCEL_CHECK_MS) reads whether one was recorded, and sets the job's halt. A
deadline needs no AWS call: it is in the job's record (created_at + timeout_seconds), and the
engine's callback compares it with the clock at every token. Either way the callback, on a
CTranslate2 thread, sees the halt at the item's next step and stops that item alone (the other
items of its batch go on); a job still waiting for a batch is ended at once by the scheduler.
A job that is due when a worker claims it is ended without decoding (worker/endings.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headrace.core.contracts import JobStatus
from headrace.core.logs import request_context

if TYPE_CHECKING:
    from worker.stream_store import SubscriberWatch

logger = logging.getLogger("headrace.worker")


@dataclass
class Halt:
    """Why a job must stop now, if it must. Set on the event loop or by the engine's thread,
    read by the engine's thread: single attribute reads and writes, atomic under the GIL."""

    deadline: float | None = None  # wall clock (time.time()), comparable with submitted_at
    reason: JobStatus | None = None  # CANCELLED or TIMED_OUT once due
    stopped: JobStatus | None = None  # set when decoding stopped for it (not if it ended first)
    stopped_at: float | None = None

    def request(self, reason: JobStatus) -> None:
        if self.reason is None:
            self.reason = reason

    def due(self) -> JobStatus | None:
        """The reason to stop now (a cancel, or the deadline passed), or None. Cheap enough for
        every token: one attribute read, and a clock read only for a job with a deadline."""
        if self.reason is None and self.deadline is not None and time.time() >= self.deadline:
            self.reason = JobStatus.TIMED_OUT
        return self.reason


class Halts:
    """The halts of the jobs this worker decodes: told of cancels by the worker's job watch,
    and of deadlines by a timer (for a job that waits for a batch: one that decodes finds its
    deadline at its next token)."""

    def __init__(self, watch: SubscriberWatch) -> None:
        self.watch = watch
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def start(
        self,
        request_id: str,
        deadline: float | None,
        *,
        on_due: Callable[[], None],
        tokens: Callable[[], int],
    ) -> Halt:
        """The job's halt, watched until `stop`. `on_due` runs when it becomes due (to end the
        job at once if it waits for a batch); `tokens` says how many the job has generated."""
        halt = Halt(deadline=deadline)

        def cancelled() -> None:
            if halt.reason is not None:
                return
            halt.request(JobStatus.CANCELLED)
            with request_context(request_id):
                logger.info("cancel seen; stopping the job", extra={"completion_tokens": tokens()})
            on_due()

        self.watch.watch_cancel(request_id, cancelled)
        if halt.deadline is not None:
            self._arm(request_id, halt, on_due)
        return halt

    def _arm(self, request_id: str, halt: Halt, on_due: Callable[[], None]) -> None:
        assert halt.deadline is not None

        def fire() -> None:
            if halt.due() is None:  # the loop's clock ran ahead of the wall clock
                self._arm(request_id, halt, on_due)
            else:
                on_due()

        delay = max(0.0, halt.deadline - time.time()) + 0.001
        self._timers[request_id] = asyncio.get_running_loop().call_later(delay, fire)

    def stop(self, request_id: str) -> None:
        self.watch.unwatch_cancel(request_id)
        timer = self._timers.pop(request_id, None)
        if timer is not None:
            timer.cancel()
