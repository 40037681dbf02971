"""What a worker holds: each held job's SQS message and DynamoDB lease, kept alive together.

A worker holds up to its capacity (dozens of jobs), and each heartbeat must extend every
message's visibility and every job's lease before they lapse. The messages go ten a call
(ChangeMessageVisibilityBatch). The leases are conditional updates, one call each: a
TransactWriteItems of them would be one call, but it fails whole when a single job finished
meanwhile, and the local AWS endpoint copies the whole table for every transaction (it took
more CPU than all the single updates together).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from headrace.core.errors import HeadraceError, Throttled, TransientError
from headrace.core.logs import request_context
from worker.job_queue import JobQueue
from worker.lifecycle import JobLifecycle

logger = logging.getLogger("headrace.worker")


@dataclass(frozen=True)
class HeldMessage:
    receipt_handle: str
    request_id: str
    lapses_at: float  # when its visibility or its lease runs out, whichever comes first


class Leases:
    def __init__(
        self,
        queue: JobQueue,
        lifecycle: JobLifecycle,
        *,
        visibility_timeout: int,
        clock: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.lifecycle = lifecycle
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        self._held: dict[str, HeldMessage] = {}

    @property
    def beat_seconds(self) -> float:
        return max(0.5, self.visibility_timeout / 3)

    def hold(self, receipt: str, request_id: str, lapses_at: float) -> None:
        self._held[receipt] = HeldMessage(receipt, request_id, lapses_at)

    def drop(self, receipt: str) -> None:
        self._held.pop(receipt, None)

    def __len__(self) -> int:
        return len(self._held)

    async def keep_alive(self) -> None:
        """Beat every third of the visibility timeout, until cancelled."""
        while True:
            await asyncio.sleep(self.beat_seconds)
            await self.extend()

    async def extend(self) -> None:
        """Extend what would lapse within two beats.

        What is skipped has two beats ahead of it, so the next beat extends it with a beat
        to spare, as every beat extending everything would leave. A job that finishes within
        a beat or two of its claim (most do) is never extended: every extension is an AWS
        call per job, one DynamoDB write each."""
        now = self.clock()
        held = [h for h in self._held.values() if h.lapses_at - now < 2 * self.beat_seconds]
        await self._extend_visibility(held)
        until = now + self.visibility_timeout
        await self._extend_leases(held, until)
        for message in held:
            if message.receipt_handle in self._held:  # not finished meanwhile
                self._held[message.receipt_handle] = replace(message, lapses_at=until)

    async def _extend_visibility(self, held: list[HeldMessage]) -> None:
        failed = await self.queue.extend_visibility(
            [h.receipt_handle for h in held], self.visibility_timeout
        )
        for message in held:
            reason = failed.get(message.receipt_handle)
            if reason is not None and message.receipt_handle in self._held:  # not just deleted
                with request_context(message.request_id):
                    logger.warning("could not extend the message's visibility: %s", reason)

    async def _extend_leases(self, held: list[HeldMessage], until: float) -> None:
        for message in held:
            if message.receipt_handle not in self._held:
                continue  # finished meanwhile
            with request_context(message.request_id):
                try:
                    extended = await self.lifecycle.extend(message.request_id, until)
                except HeadraceError as e:
                    logger.warning("could not extend the lease: %s", e.detail)
                    continue
                if not extended and message.receipt_handle in self._held:
                    logger.warning("could not extend the lease: the job is no longer ours")

    async def release_all(self) -> None:
        """Hand back what shutdown interrupted: job to QUEUED, message visible at once."""
        for held in list(self._held.values()):
            with request_context(held.request_id):
                logger.info("releasing job at shutdown")
                with contextlib.suppress(TransientError, Throttled):
                    await self.lifecycle.release(held.request_id)
                await self.queue.set_visibility(held.receipt_handle, 0)
        self._held.clear()
