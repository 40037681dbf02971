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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from headrace.core.errors import ConditionFailed, HeadraceError, Throttled, TransientError
from headrace.core.logs import request_context
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from worker.aws_calls import call_aws

logger = logging.getLogger("headrace.worker")

AwsCall = Callable[..., Awaitable[Any]]

VISIBILITY_BATCH_LIMIT = 10


@dataclass(frozen=True)
class HeldMessage:
    receipt_handle: str
    request_id: str
    lapses_at: float  # when its visibility or its lease runs out, whichever comes first


class Leases:
    def __init__(
        self,
        settings: Settings,
        *,
        sqs: Any,
        dynamodb: Any,
        queue_url: str,
        worker_id: str,
        clock: Callable[[], float],
        aws: AwsCall = call_aws,
    ) -> None:
        self.settings = settings
        self.aws = aws
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.queue_url = queue_url
        self.worker_id = worker_id
        self.clock = clock
        self._held: dict[str, HeldMessage] = {}

    @property
    def beat_seconds(self) -> float:
        return max(0.5, self.settings.visibility_timeout_seconds / 3)

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
        visibility = self.settings.visibility_timeout_seconds
        now = self.clock()
        held = [h for h in self._held.values() if h.lapses_at - now < 2 * self.beat_seconds]
        for start in range(0, len(held), VISIBILITY_BATCH_LIMIT):
            await self._extend_visibility(held[start : start + VISIBILITY_BATCH_LIMIT], visibility)
        until = now + visibility
        await self._extend_leases(held, until)
        for message in held:
            if message.receipt_handle in self._held:  # not finished meanwhile
                self._held[message.receipt_handle] = replace(message, lapses_at=until)

    async def _extend_visibility(self, held: list[HeldMessage], visibility: int) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": h.receipt_handle, "VisibilityTimeout": visibility}
            for i, h in enumerate(held)
        ]
        try:
            answer = await self.aws(
                self.sqs.change_message_visibility_batch, QueueUrl=self.queue_url, Entries=entries
            )
        except HeadraceError as e:
            logger.warning("could not extend message visibility: %s", e.detail)
            return
        for failure in answer.get("Failed", []):
            message = held[int(failure["Id"])]
            if message.receipt_handle in self._held:  # not just finished and deleted
                with request_context(message.request_id):
                    logger.warning(
                        "could not extend the message's visibility: %s",
                        failure.get("Message") or failure.get("Code"),
                    )

    async def _extend_leases(self, held: list[HeldMessage], until: float) -> None:
        for message in held:
            if message.receipt_handle not in self._held:
                continue  # finished meanwhile
            with request_context(message.request_id):
                try:
                    await self.aws(
                        self.dynamodb.update_item,
                        **job_table.extend_lease(
                            self.settings.table_name,
                            request_id=message.request_id,
                            worker_id=self.worker_id,
                            until=until,
                        ),
                    )
                except HeadraceError as e:
                    logger.warning("could not extend the lease: %s", e.detail)

    async def release_all(self) -> None:
        """Hand back what shutdown interrupted: job to QUEUED, message visible at once."""
        for held in list(self._held.values()):
            with request_context(held.request_id):
                logger.info("releasing job at shutdown")
                with contextlib.suppress(ConditionFailed, TransientError, Throttled):
                    await self.aws(
                        self.dynamodb.update_item,
                        **job_table.release_job(
                            self.settings.table_name,
                            request_id=held.request_id,
                            worker_id=self.worker_id,
                            now=self.clock(),
                        ),
                    )
                await set_visibility(self.sqs, self.queue_url, held.receipt_handle, 0)
        self._held.clear()


async def set_visibility(sqs: Any, queue_url: str, receipt: str, seconds: int) -> None:
    try:
        await call_aws(
            sqs.change_message_visibility,
            QueueUrl=queue_url,
            ReceiptHandle=receipt,
            VisibilityTimeout=seconds,
        )
    except HeadraceError as e:
        logger.warning("could not change message visibility: %s", e.detail)
