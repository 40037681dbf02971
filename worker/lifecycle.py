"""A job's record in one worker's hands: claim, extend the lease, finish, release.

Every move is a conditional write (headrace.core.tables.jobs): a claim wins only a job that no
live worker holds, and the others only while this worker holds the lease, so a worker whose
lease lapsed can never overwrite the result of the one that took the job over. A write whose
condition fails means the job is not (or no longer) this worker's; `_write` is the one place
that turns that into an answer rather than an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.core.aws_calls import AwsCall, call_aws_async
from headrace.core.contracts import CompletionOutput, JobError, JobMessage
from headrace.core.errors import ConditionFailed
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.worker")


@dataclass(frozen=True)
class NotClaimed:
    """The job is not this worker's to run now. Its message should show again in `retry_in`
    seconds; None: never, the job is final (delete the message)."""

    retry_in: int | None


@dataclass(frozen=True)
class Stored:
    """A result stored; the job's subscription count as that final write left it."""

    subscriptions: int | None


class JobLifecycle:
    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: Any,
        worker_id: str,
        clock: Callable[[], float],
        aws: AwsCall = call_aws_async,
    ) -> None:
        self.settings = settings
        self.table = settings.table_name
        self.dynamodb = dynamodb
        self.worker_id = worker_id
        self.clock = clock
        self.aws = aws

    async def claim(self, job: JobMessage) -> JobRecord | NotClaimed:
        """RUNNING and leased to this worker (its record as the claim left it), or why not."""
        now = self.clock()
        lease_seconds = self.settings.visibility_timeout_seconds
        claimed = await self._write(
            job_table.claim_recorded_job(
                self.table,
                request_id=job.request_id,
                worker_id=self.worker_id,
                now=now,
                lease_seconds=lease_seconds,
            )
        )
        if claimed is not None:
            return JobRecord.from_item(claimed["Attributes"])
        found = await self.aws(
            self.dynamodb.get_item, **job_table.get_job(self.table, job.request_id)
        )
        if "Item" not in found:
            # Event-driven submits enqueue without a record: the claim writes it.
            claimed = await self._write(
                job_table.claim_job(
                    self.table,
                    request_id=job.request_id,
                    owner=job.owner,
                    model=job.model,
                    request=job.request,
                    worker_id=self.worker_id,
                    now=now,
                    lease_seconds=lease_seconds,
                    ttl_seconds=self.settings.job_ttl_seconds,
                )
            )
            if claimed is None:  # another worker wrote it first: see whose it is shortly
                return NotClaimed(retry_in=1)
            return JobRecord.from_item(claimed["Attributes"])
        record = JobRecord.from_item(found["Item"])
        if record.status.is_final:
            logger.info("duplicate delivery of a finished job; deleting the message")
            return NotClaimed(retry_in=None)
        if record.lease_expires_at:
            logger.info(
                "job is leased by another worker", extra={"lease_owner": record.lease_owner}
            )
            # Come back just after that lease would lapse.
            return NotClaimed(retry_in=max(1, int(record.lease_expires_at - self.clock()) + 1))
        return NotClaimed(retry_in=0)

    async def extend(self, request_id: str, until: float) -> bool:
        """Lease the job to this worker until `until`; False if it is no longer this worker's."""
        update = job_table.extend_lease(
            self.table, request_id=request_id, worker_id=self.worker_id, until=until
        )
        return await self._write(update) is not None

    async def succeed(self, request_id: str, output: CompletionOutput) -> Stored | None:
        """The result stored and the job SUCCEEDED; None if the lease was lost (the worker
        that owns the job now stores its own result)."""
        answer = await self._write(
            job_table.finish_job(
                self.table,
                request_id=request_id,
                worker_id=self.worker_id,
                now=self.clock(),
                output=output.to_wire(),
            )
        )
        if answer is None:
            return None
        count = answer.get("Attributes", {}).get("subscriptions")
        return Stored(subscriptions=int(count["N"]) if count else None)

    async def fail(self, request_id: str, error: JobError) -> bool:
        """The job FAILED for good; False if the lease was lost."""
        update = job_table.finish_job(
            self.table,
            request_id=request_id,
            worker_id=self.worker_id,
            now=self.clock(),
            error=error,
        )
        return await self._write(update) is not None

    async def release(self, request_id: str) -> bool:
        """Back to QUEUED for another attempt; False if the lease was lost."""
        update = job_table.release_job(
            self.table, request_id=request_id, worker_id=self.worker_id, now=self.clock()
        )
        return await self._write(update) is not None

    async def _write(self, update: dict[str, Any]) -> dict[str, Any] | None:
        """The conditional update's answer; None if its condition failed."""
        try:
            answer: dict[str, Any] = await self.aws(self.dynamodb.update_item, **update)
        except ConditionFailed:
            return None
        return answer
