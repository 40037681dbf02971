"""Two job queues as one: interactive work first, batch work in the spare slots.

A deployment has an interactive and a batch queue (each with its dead-letter queue). A worker
always asks the interactive queue first and fills what room is left with batch work, so an
interactive job never waits behind a batch backlog for more than the jobs already decoding.
Batch work is never starved: while both lanes have work, at least `batch_share` of the jobs a
worker takes are batch jobs (`BatchShare`).

A receipt handle says nothing of its queue, so the queue each message came from is remembered
(until its message is deleted, and for the latest `REMEMBERED_RECEIPTS` receipts at most, far
more than a worker holds); every later call on that receipt goes there.
"""

from __future__ import annotations

import enum
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from worker.job_queue import RECEIVE_LIMIT, JobQueue

# While idle, the interactive queue's long poll is cut to this, so that batch work arriving on an
# idle worker waits at most this long for the short poll of the batch queue that follows. While
# the batch lane has a backlog (its last poll filled the room), the interactive queue is not
# long-polled at all: a worker working through a backlog would otherwise idle this long between
# receives. A batch lane found empty is not looked at again for as long while interactive work
# keeps coming: under a stream of interactive jobs each receive would pay a second, empty call.
BATCH_LOOK_SECONDS = 1
REMEMBERED_RECEIPTS = 10_000


class Lane(enum.StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


class BatchShare:
    """How many batch jobs a worker owes the batch lane so that, while both lanes have work,
    batch jobs are at least `share` of what it takes. Pure bookkeeping: no I/O."""

    def __init__(self, share: float) -> None:
        if not 0 <= share < 1:
            raise ValueError("batch share must be at least 0 and below 1")
        # Each interactive job taken earns the batch lane share / (1 - share) of a job.
        self._per_interactive = share / (1 - share)
        self._credit = 0.0

    def owed(self, room: int) -> int:
        """Batch jobs to take first, out of `room` free slots."""
        return min(room, math.floor(self._credit + 1e-9))

    def took(self, *, interactive: int, batch: int, batch_asked: int) -> None:
        self._credit += interactive * self._per_interactive - batch
        if batch < batch_asked:
            self._credit = 0.0  # the batch lane ran dry: nothing is owed to an empty queue
        self._credit = max(self._credit, 0.0)


class LaneQueues:
    """The JobQueue interface over both lanes (batch None: a deployment with one queue)."""

    def __init__(
        self,
        interactive: JobQueue,
        batch: JobQueue | None,
        *,
        batch_share: float,
        origins: OrderedDict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interactive = interactive
        self.batch = batch
        self.share = BatchShare(batch_share)
        self._batch_backlog = False  # the batch lane's last poll filled all the room it had
        self._batch_dry_at: float | None = None  # when a poll last found the batch lane empty
        self._clock = clock
        # receipt handle -> the URL of the queue it came from (shared with `with_client` copies)
        self._origins: OrderedDict[str, str] = OrderedDict() if origins is None else origins

    def with_client(self, sqs: Any) -> LaneQueues:
        """The same lanes through another SQS client (the heartbeat's), sharing the receipts."""
        return LaneQueues(
            JobQueue(sqs=sqs, queue_url=self.interactive.queue_url),
            None if self.batch is None else JobQueue(sqs=sqs, queue_url=self.batch.queue_url),
            batch_share=0.0,
            origins=self._origins,
        )

    def lane_of(self, receipt: str) -> Lane:
        batch_url = self.batch.queue_url if self.batch is not None else None
        return Lane.BATCH if self._origins.get(receipt) == batch_url else Lane.INTERACTIVE

    async def receive(
        self, *, max_messages: int, wait_seconds: int, hide_seconds: int | None = None
    ) -> list[dict[str, Any]]:
        """Up to `max_messages`: what is owed to the batch lane, then interactive work, then
        batch work in the room left. Raises HeadraceError if a poll fails."""
        if self.batch is None:
            return await self._take(self.interactive, max_messages, wait_seconds, hide_seconds)
        owed = self.share.owed(max_messages)
        owed_batch = await self._take(self.batch, owed, 0, hide_seconds) if owed else []
        room = max_messages - len(owed_batch)
        # Long-poll only when nothing came yet and no batch backlog waits, and not for long: the
        # batch queue is next.
        idle = not owed_batch and not self._batch_backlog
        wait = min(wait_seconds, BATCH_LOOK_SECONDS) if idle else 0
        interactive = await self._take(self.interactive, room, wait, hide_seconds) if room else []
        room -= len(interactive)
        spare = room if not (interactive and self._batch_lately_dry()) else 0
        spare_batch = await self._take(self.batch, spare, 0, hide_seconds) if spare else []
        # The batch lane's last poll answered all it could (a receive returns RECEIVE_LIMIT at
        # most): more waits there.
        last_asked, last_got = (spare, spare_batch) if spare else (owed, owed_batch)
        self._batch_backlog = last_asked > 0 and len(last_got) == min(last_asked, RECEIVE_LIMIT)
        if last_asked > 0:
            self._batch_dry_at = None if self._batch_backlog else self._clock()
        self.share.took(
            interactive=len(interactive),
            batch=len(owed_batch) + len(spare_batch),
            batch_asked=owed + spare,
        )
        return owed_batch + interactive + spare_batch

    def _batch_lately_dry(self) -> bool:
        dry_at = self._batch_dry_at
        return dry_at is not None and self._clock() - dry_at < BATCH_LOOK_SECONDS

    async def _take(
        self, queue: JobQueue, count: int, wait_seconds: int, hide_seconds: int | None
    ) -> list[dict[str, Any]]:
        messages = await queue.receive(
            max_messages=count, wait_seconds=wait_seconds, hide_seconds=hide_seconds
        )
        for message in messages:
            self._origins[message["ReceiptHandle"]] = queue.queue_url
        while len(self._origins) > REMEMBERED_RECEIPTS:
            self._origins.popitem(last=False)
        return messages

    async def delete(self, receipt: str) -> None:
        await self._queue_of(receipt, forget=True).delete(receipt)

    async def set_visibility(self, receipt: str, seconds: int) -> None:
        await self._queue_of(receipt).set_visibility(receipt, seconds)

    async def extend_visibility(self, receipts: list[str], seconds: int) -> dict[str, str]:
        by_queue: dict[str, list[str]] = {}
        for receipt in receipts:
            by_queue.setdefault(self._queue_of(receipt).queue_url, []).append(receipt)
        failed: dict[str, str] = {}
        for queue_url, batch in by_queue.items():
            failed.update(await self._by_url(queue_url).extend_visibility(batch, seconds))
        return failed

    def _queue_of(self, receipt: str, *, forget: bool = False) -> JobQueue:
        origin = self._origins.pop(receipt, None) if forget else self._origins.get(receipt)
        return self._by_url(origin or self.interactive.queue_url)

    def _by_url(self, queue_url: str) -> JobQueue:
        if self.batch is not None and queue_url == self.batch.queue_url:
            return self.batch
        return self.interactive
