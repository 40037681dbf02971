"""A stream's DynamoDB traffic: the fence each flush passes first, then the chunk writer and the
subscriber watch that all of a worker's streams share.

- `StreamFence` commits each flush of one job's stream to the stream's head item, conditional on
  the writer's lease epoch and the next seq (headrace.core.tables.streams): a worker whose job
  was taken over commits nothing, and no seq is committed twice. The chunks are stored as
  items in the same transaction, or (when a flush goes on its own) only after the commit:
  every chunk item holds what its seq was committed as, whoever stores it.

Alone, the fence is one conditional write per flush of each job (a BatchWriteItem carries no
condition), and the rest would cost a BatchWriteItem per flush and a Query per subscriber check
per job; with dozens of jobs decoding at once those calls add up (and locally every one of them
is CPU taken from the decoder), so the worker pools them:

- Flushes of many streams go out as one transaction when the fence is given the worker's
  `TransactionGroups` (worker/transactions.py): each stream's head commit with its chunk
  items, one call for the streams flushing at once rather than a conditional write each. A
  flush the group could not store goes the ordinary way (commit, then the chunk writer),
  which tells a lost lease from a write that went through.
- `ChunkWriter` is a group commit: chunks put while a write is in flight go out together in
  the next BatchWriteItem (25 items a call), and each caller returns once its chunks are stored.
- `SubscriberWatch` reads the `subscriptions` counter of every running job with one
  BatchGetItem (100 jobs a call) per interval and tells a job's publisher when it grew; only
  then does that publisher query its subscriptions. The same read says whether a cancel was
  asked for a job this worker holds (worker/halts.py), so learning of cancels costs no call
  per job, let alone per token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from headrace.core.aws_calls import AwsCall
from headrace.core.errors import ConditionFailed, HeadraceError
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import Item
from worker.lifecycle import LeaseLost
from worker.transactions import TransactionGroups

logger = logging.getLogger("headrace.stream")

BATCH_WRITE_LIMIT = 25
BATCH_GET_LIMIT = 100
# Actions in one TransactWriteItems; a last flush leaves room for the head and the job.
TRANSACTION_LIMIT = 100
_WRITE_ATTEMPTS = 5
# A commit carries its chunks in the head item, which DynamoDB limits to 400 KB: a flush bigger
# than this is committed in parts.
COMMIT_LIMIT_BYTES = 300_000


@dataclass
class StreamFence:
    """One job's stream head, as the writer of one lease epoch sees it."""

    table: str
    request_id: str
    epoch: int
    dynamodb: Any
    aws: AwsCall
    expires_at: int
    # The next seq the head holds. None: a first attempt, whose first commit creates the head.
    committed: int | None = None
    # The worker's group commit of flushes (None: each flush commits and stores on its own).
    flushes: TransactionGroups | None = None

    async def open(self) -> stream_table.StreamHead:
        """Take the stream over for this epoch (a retried job): the head as it was then.
        Raises LeaseLost if a later epoch took it first."""
        try:
            answer = await self.aws(
                self.dynamodb.update_item,
                **stream_table.open_stream_head(
                    self.table,
                    request_id=self.request_id,
                    epoch=self.epoch,
                    expires_at=self.expires_at,
                ),
            )
        except ConditionFailed:
            raise LeaseLost("a later attempt took the stream over") from None
        head = stream_table.StreamHead.from_item(answer["Attributes"])
        self.committed = head.next_seq
        return head

    async def commit(self, items: list[Item]) -> None:
        """Commit chunk items, the next seqs in order; raises LeaseLost if the stream is no
        longer this epoch's."""
        for part in _parts(items):
            try:
                await self.aws(self.dynamodb.update_item, **self._commit_of(part))
            except ConditionFailed:
                if not await self._went_through(len(part)):
                    raise LeaseLost("the stream was taken over by a later attempt") from None
            self.committed = (self.committed or 0) + len(part)

    async def store(
        self, items: list[Item], writer: ChunkWriter, notes: Sequence[dict[str, Any]] = ()
    ) -> bool:
        """Commit and store chunk items, the next seqs in order: with other streams' flushes
        when there is a group, else (or if the group's transaction did not go through) the
        commit, then `writer`. Raises LeaseLost if the stream is no longer this epoch's.

        `notes` (conditional updates of the stream's subscriptions: what was posted to each)
        go in the same transaction; True if they did. Otherwise they are not written (a note
        whose subscription went away fails the transaction, which the ordinary writes follow)."""
        if self.flushes is not None and self._fits_one_transaction(items, len(notes)):
            actions = stream_table.flush_actions(self._commit_of(items, stored_with_it=True), items)
            if await self.flushes.write([*actions, *({"Update": n} for n in notes)]):
                self.advance(len(items))
                return True
        await self.commit(items)
        await writer.put(items)
        return not notes

    def last_flush(self, items: list[Item]) -> list[dict[str, Any]] | None:
        """The commit of a stream's last flush as transaction actions (stored with the job's
        final state, then `advance`d past); None if it needs more than one transaction."""
        if not self._fits_one_transaction(items):
            return None
        return stream_table.last_flush_actions(self._commit_of(items, stored_with_it=True), items)

    def _fits_one_transaction(self, items: list[Item], others: int = 0) -> bool:
        return len(items) + others <= TRANSACTION_LIMIT - 2 and len(_parts(items)) == 1

    def _commit_of(self, items: list[Item], *, stored_with_it: bool = False) -> dict[str, Any]:
        """The head's commit of `items`, the next seqs from what is committed."""
        return stream_table.commit_flush(
            self.table,
            request_id=self.request_id,
            epoch=self.epoch,
            from_seq=self.committed,
            items=items,
            expires_at=self.expires_at,
            stored_with_it=stored_with_it,
        )

    def advance(self, count: int) -> None:
        """`count` more seqs were committed (by the transaction `last_flush` was part of)."""
        self.committed = (self.committed or 0) + count

    async def _went_through(self, count: int) -> bool:
        """A retried commit whose first try was stored finds its own write: it stands."""
        found = await self.aws(
            self.dynamodb.get_item, **stream_table.get_stream_head(self.table, self.request_id)
        )
        if "Item" not in found:
            return False
        head = stream_table.StreamHead.from_item(found["Item"])
        return head.epoch == self.epoch and head.next_seq == (self.committed or 0) + count


def _parts(items: list[Item]) -> list[list[Item]]:
    parts: list[list[Item]] = [[]]
    size = 0
    for item in items:
        item_size = len(json.dumps(item))
        if parts[-1] and size + item_size > COMMIT_LIMIT_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += item_size
    return parts


class ChunkWriter:
    def __init__(self, *, table: str, dynamodb: Any, aws: AwsCall) -> None:
        self.table = table
        self.dynamodb = dynamodb
        self.aws = aws
        self._queue: list[tuple[Item, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def put(self, items: list[Item]) -> None:
        """Store the items (stream chunks); raises HeadraceError if they could not be stored."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await asyncio.gather(*futures)

    async def _flush(self) -> None:
        while self._queue:
            taken, self._queue = self._queue[:BATCH_WRITE_LIMIT], self._queue[BATCH_WRITE_LIMIT:]
            error: HeadraceError | None = None
            try:
                await self._write([item for item, _ in taken])
            except HeadraceError as e:
                error = e
            for _, future in taken:
                if future.done():  # its caller was cancelled
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    async def _write(self, items: list[Item]) -> None:
        pending = {self.table: [{"PutRequest": {"Item": item}} for item in items]}
        for _ in range(_WRITE_ATTEMPTS):
            answer = await self.aws(self.dynamodb.batch_write_item, RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if not pending:
                return
            await asyncio.sleep(0.05)
        raise HeadraceError("could not store stream chunks")


class Watched(Protocol):
    request_id: str

    def subscriptions_seen(self, count: int) -> None: ...


class SubscriberWatch:
    def __init__(self, *, table: str, dynamodb: Any, aws: AwsCall, interval: float) -> None:
        self.table = table
        self.dynamodb = dynamodb
        self.aws = aws
        self.interval = interval
        self._watched: dict[str, Watched] = {}
        self._cancellable: dict[str, Callable[[], None]] = {}

    def watch_cancel(self, request_id: str, cancelled: Callable[[], None]) -> None:
        """Call `cancelled` at each check that finds a cancel asked for the job."""
        self._cancellable[request_id] = cancelled

    def unwatch_cancel(self, request_id: str) -> None:
        self._cancellable.pop(request_id, None)

    def add(self, watched: Watched) -> None:
        self._watched[watched.request_id] = watched

    def remove(self, watched: Watched) -> None:
        if self._watched.get(watched.request_id) is watched:
            del self._watched[watched.request_id]

    async def run(self) -> None:
        """Check every `interval` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except HeadraceError as e:
                logger.warning("could not check for new subscribers: %s", e.detail)

    async def check(self) -> None:
        ids = list(self._watched.keys() | self._cancellable.keys())
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            answer = await self.aws(
                self.dynamodb.batch_get_item,
                **stream_table.get_subscription_counts(
                    self.table, ids[start : start + BATCH_GET_LIMIT]
                ),
            )
            # Keys left unprocessed (throttling) are simply read at the next check.
            for item in answer.get("Responses", {}).get(self.table, []):
                request_id, count = stream_table.subscription_count(item)
                watched = self._watched.get(request_id)
                if watched is not None:
                    watched.subscriptions_seen(count)
                cancelled = self._cancellable.get(request_id)
                if cancelled is not None and stream_table.cancel_requested(item):
                    cancelled()
