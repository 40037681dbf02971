"""What a worker holds: its own lease, and each held job's SQS message, kept alive together.

A job is leased to its worker for as long as the worker's own lease lasts (worker/lifecycle.py),
so a heartbeat renews every job's lease with one DynamoDB write, however many jobs the worker
holds. The messages cannot be pooled that way: they go ten a call
(ChangeMessageVisibilityBatch), the calls at once, so a beat takes about one round trip.

Beats come every quarter of the visibility timeout and extend both by a whole timeout: a lease
outlives three failed beats in a row. Every held message is extended at every beat (but
one received within the last half beat), so a dead worker's messages show again only after
its lease has lapsed, and the receive that finds them claims them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from headrace.core.aws_calls import TRANSIENT_ERRORS
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.core.tables.jobs import JobRecord
from worker.job_queue import MessageQueue
from worker.lifecycle import JobLifecycle

logger = logging.getLogger("headrace.worker")


@dataclass(frozen=True)
class HeldMessage:
    receipt_handle: str
    record: JobRecord  # the job as this worker claimed it
    lapses_at: float  # when its visibility runs out
    attempt: bool  # claimed as an attempt (not only to end it): a hand-back refunds it


@dataclass(frozen=True)
class Beat:
    """One heartbeat, as measured: jobs held, messages extended, seconds it took."""

    held: int
    extended: int
    seconds: float
    renewed: bool


class Leases:
    def __init__(
        self,
        queue: MessageQueue,
        lifecycle: JobLifecycle,
        *,
        visibility_timeout: int,
        clock: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.lifecycle = lifecycle
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        self.lease_until = 0.0  # this worker's lease, as last renewed
        self.last_beat: Beat | None = None
        self._held: dict[str, HeldMessage] = {}

    @property
    def beat_seconds(self) -> float:
        return max(0.25, self.visibility_timeout / 4)

    def hold(
        self, receipt: str, record: JobRecord, lapses_at: float, *, attempt: bool = True
    ) -> None:
        self._held[receipt] = HeldMessage(receipt, record, lapses_at, attempt)

    def drop(self, receipt: str) -> None:
        self._held.pop(receipt, None)

    def __len__(self) -> int:
        return len(self._held)

    async def keep_alive(self) -> None:
        """Beat every quarter of the visibility timeout, on a fixed clock, until cancelled: a
        slow beat shortens the wait for the next rather than putting it off."""
        next_beat = time.monotonic() + self.beat_seconds
        while True:
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            next_beat = max(next_beat + self.beat_seconds, time.monotonic())
            await self.beat()

    async def beat(self) -> Beat:
        """Renew this worker's lease and extend the visibility of the messages it holds."""
        started = time.monotonic()
        until = self.clock() + self.visibility_timeout
        held = [h for h in self._held.values() if h.lapses_at < until - self.beat_seconds / 2]
        renewed, failed = await asyncio.gather(
            self._renew(until),
            self.queue.extend_visibility([h.receipt_handle for h in held], self.visibility_timeout),
        )
        for message in held:
            reason = failed.get(message.receipt_handle)
            if message.receipt_handle not in self._held:
                continue  # finished meanwhile
            if reason is None:
                self._held[message.receipt_handle] = replace(message, lapses_at=until)
            else:
                with request_context(message.record.request_id):
                    logger.warning("could not extend the message's visibility: %s", reason)
        beat = Beat(len(self._held), len(held), time.monotonic() - started, renewed)
        self.last_beat = beat
        level = logging.WARNING if beat.seconds > self.beat_seconds / 2 else logging.DEBUG
        logger.log(
            level,
            "heartbeat",
            extra={"held": beat.held, "extended": beat.extended, "beat_ms": beat.seconds * 1000},
        )
        return beat

    async def _renew(self, until: float) -> bool:
        try:
            await self.lifecycle.renew_lease(until)
        except HeadraceError as e:
            logger.warning("could not renew the worker's lease: %s", e.detail)
            return False
        self.lease_until = until
        return True

    async def release_all(self) -> None:
        """Hand back what shutdown interrupted (job to QUEUED, message visible at once; the
        attempt does not count), then end this worker's lease."""
        for held in list(self._held.values()):
            with request_context(held.record.request_id):
                logger.info("releasing job at shutdown")
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await self.lifecycle.release(held.record, refund=held.attempt)
                await self.queue.set_visibility(held.receipt_handle, 0)
        self._held.clear()
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.lifecycle.end_lease()
