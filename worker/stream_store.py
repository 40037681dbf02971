"""The DynamoDB traffic that all of a worker's streams share: one writer, one subscriber watch.

Per job, a stream would cost a BatchWriteItem per flush and a Query per subscriber check. With
dozens of jobs decoding at once those calls add up (and locally every one of them is CPU taken
from the decoder), so the worker pools them:

- `ChunkWriter` is a group commit: chunks put while a write is in flight go out together in
  the next BatchWriteItem (25 items a call), and each caller returns once its chunks are stored.
- `SubscriberWatch` reads the `subscriptions` counter of every running job with one
  BatchGetItem (100 jobs a call) per interval and tells a job's publisher when it grew; only
  then does that publisher query its subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from headrace.core.aws_calls import AwsCall
from headrace.core.errors import HeadraceError
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import Item

logger = logging.getLogger("headrace.stream")

BATCH_WRITE_LIMIT = 25
BATCH_GET_LIMIT = 100
_WRITE_ATTEMPTS = 5


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
        ids = list(self._watched)
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
