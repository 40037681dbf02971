"""Which models this worker serves, as the API's model endpoints see it: a presence record per
model that lapses unless renewed, so a worker that dies stops counting on its own. The record
also says the context length the worker enforces for the model, which the listing publishes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from headrace.core.aws_calls import TRANSIENT_ERRORS, AwsCall, call_aws_async
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table

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
        aws: AwsCall = call_aws_async,
    ) -> None:
        self.table = settings.table_name
        self.ttl = settings.presence_ttl_seconds
        self.dynamodb = dynamodb
        self.worker_id = worker_id
        self.context_lengths = context_lengths  # model -> its context length, in tokens
        self.clock = clock
        self.aws = aws

    async def announce(self) -> None:
        """Renew every model's record three times a lifetime, until cancelled."""
        while True:
            for model in self.context_lengths:
                try:
                    await self._put(model, until=self.clock() + self.ttl)
                except TRANSIENT_ERRORS as e:
                    logger.warning("could not announce presence: %s", e.detail)
            await asyncio.sleep(max(1.0, self.ttl / 3))

    async def withdraw(self) -> None:
        """End every model's record now (at shutdown)."""
        for model in self.context_lengths:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._put(model, until=self.clock())

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
