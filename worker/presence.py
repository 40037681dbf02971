"""Which models this worker serves, as the API's model endpoints see it: a presence record per
model that lapses unless renewed, so a worker that dies stops counting on its own. The record
also says the context length the worker enforces for the model, which the listing publishes.

Beside it, a record of this worker per model (headrace.core.tables.workers) with the lanes'
queue depths it counted as it renewed: a queued job's view shows how many workers serve its
model and the backlog, without a queue call of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from headrace.core.aws_calls import TRANSIENT_ERRORS, AwsCall, call_aws_async
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.core.tables import workers as worker_table
from worker.job_queue import JobQueue

logger = logging.getLogger("headrace.worker")


class Presence:
    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: Any,
        worker_id: str,
        context_lengths: dict[str, int],
        clock: Callable[[], float],
        lanes: Mapping[str, JobQueue] | None = None,  # lane -> its queue, to count what waits
        aws: AwsCall = call_aws_async,
    ) -> None:
        self.table = settings.table_name
        self.ttl = settings.presence_ttl_seconds
        self.dynamodb = dynamodb
        self.worker_id = worker_id
        self.context_lengths = context_lengths  # model -> its context length, in tokens
        self.clock = clock
        self.lanes = dict(lanes or {})
        self.aws = aws

    async def announce(self) -> None:
        """Renew every model's record three times a lifetime, until cancelled."""
        while True:
            counted_at = self.clock()  # before counting: the count is at least this fresh
            waiting = await self._count_waiting()
            for model in self.context_lengths:
                try:
                    now = self.clock()
                    await self._put(model, until=now + self.ttl)
                    await self.aws(
                        self.dynamodb.put_item,
                        **worker_table.put_worker(
                            self.table,
                            model=model,
                            worker_id=self.worker_id,
                            until=now + self.ttl,
                            waiting=waiting,
                            counted_at=counted_at,
                        ),
                    )
                except TRANSIENT_ERRORS as e:
                    logger.warning("could not announce presence: %s", e.detail)
            await asyncio.sleep(max(1.0, self.ttl / 3))

    async def withdraw(self) -> None:
        """End every model's record now (at shutdown)."""
        for model in self.context_lengths:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._put(model, until=self.clock())
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.aws(
                    self.dynamodb.delete_item,
                    **worker_table.delete_worker(self.table, model=model, worker_id=self.worker_id),
                )

    async def _count_waiting(self) -> dict[str, int] | None:
        """Each lane's visible messages; None if a count failed (the record then has none)."""
        try:
            return {lane: await queue.visible() for lane, queue in self.lanes.items()}
        except TRANSIENT_ERRORS as e:
            logger.warning("could not count the waiting jobs: %s", e.detail)
            return None

    async def _put(self, model: str, *, until: float) -> None:
        await self.aws(
            self.dynamodb.put_item,
            **job_table.put_presence(
                self.table,
                model=model,
                worker_id=self.worker_id,
                until=until,
                context_length=self.context_lengths[model],
            ),
        )
