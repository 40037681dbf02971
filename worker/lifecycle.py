"""A job's record in one worker's hands: claim, finish, release; and this worker's own lease.

Every move is a conditional write (headrace.core.tables.leases). A claim wins only a job that
has attempts left and that no live worker holds, and raises the job's epoch; every later write
holds only while this worker still leases the job in that epoch, so a worker whose job was
taken over can never overwrite what the new owner writes. A job is leased while its worker's
own lease lasts (`renew_lease`, once per heartbeat), so a worker keeps all its jobs with one
write. A write whose condition fails means the job is not (or no longer) this worker's;
`_write` is the one place that turns that into an answer rather than an error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.core.aws_calls import AwsCall, call_aws_async
from headrace.core.contracts import CompletionOutput, JobError, JobMessage, JobStatus
from headrace.core.errors import ConditionFailed, HeadraceError
from headrace.core.settings import Settings
from headrace.core.tables import attempts as attempt_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables import leases as lease_table
from headrace.core.tables.jobs import JobRecord
from worker.transactions import TransactionGroups, UpdateGroups

logger = logging.getLogger("headrace.worker")


def attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


class LeaseLost(HeadraceError):
    """The job is no longer this worker's: a newer claim fenced this one out."""


@dataclass(frozen=True)
class NotClaimed:
    """The job is not this worker's to run now. Its message should show again in `retry_in`
    seconds."""

    retry_in: int


@dataclass(frozen=True)
class AlreadyFinal:
    """The job is final and its message a leftover: the worker that ended it may have died
    after the final write, before it deleted the message or posted the stream's last events
    to the job's followers (worker/endings.py delivers them)."""

    record: JobRecord


@dataclass(frozen=True)
class ToEnd:
    """The job has no attempts left; this worker leases it (in a new epoch) only to end it:
    FAILED with `reason`, unless its stored stream shows it ended already."""

    record: JobRecord
    reason: str


@dataclass(frozen=True)
class Stored:
    """A final state stored; the job's subscription count as that final write left it."""

    subscriptions: int | None


@dataclass(frozen=True)
class StreamTail:
    """A stream's last flush, not committed yet, to be stored with the job's final state."""

    actions: list[dict[str, Any]]  # TransactWriteItems actions: the head's commit, the chunks
    subscriptions: int  # the job's subscription count the stream has seen and served


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
        self.max_attempts = settings.max_attempts
        self.dynamodb = dynamodb
        self.worker_id = worker_id
        self.clock = clock
        self.aws = aws
        # Jobs received together are claimed in one transaction (and one read of what it
        # left), and jobs that end together store their final transactions in one call.
        self.claims = UpdateGroups(dynamodb=dynamodb, aws=aws)
        self.transactions = TransactionGroups(dynamodb=dynamodb, aws=aws)
        self._mine: set[str] = set()  # jobs this worker claimed and has not let go of yet

    # ---- claiming ---------------------------------------------------------------------------

    async def claim(self, job: JobMessage) -> JobRecord | ToEnd | NotClaimed | AlreadyFinal:
        """Leased to this worker for a new attempt (its record as the claim left it), leased
        only to end it (ToEnd), or why not."""
        item = await self.claims.update(
            lease_table.claim_recorded_job(
                self.table,
                request_id=job.request_id,
                worker_id=self.worker_id,
                now=self.clock(),
                max_attempts=self.max_attempts,
            )
        )
        if item is not None:
            return self._took({"Attributes": item})
        record = await self.read(job.request_id)
        if record is not None:
            return await self._claim_held(record)
        # Event-driven submits enqueue without a record: the claim writes it.
        claimed = await self._write(
            lease_table.claim_job(
                self.table,
                request_id=job.request_id,
                owner=job.owner,
                model=job.model,
                request=job.request,
                worker_id=self.worker_id,
                now=self.clock(),
                max_attempts=self.max_attempts,
                ttl_seconds=self.settings.job_ttl_seconds,
            )
        )
        if claimed is None:  # another worker wrote it first: see whose it is shortly
            return NotClaimed(retry_in=1)
        return self._took(claimed)

    async def _claim_held(self, record: JobRecord) -> JobRecord | ToEnd | NotClaimed | AlreadyFinal:
        """The claim of a job that is not simply waiting: final, running, or out of attempts."""
        if record.status.is_final:
            logger.info("duplicate delivery of a finished job; deleting the message")
            return AlreadyFinal(record)
        if record.status is JobStatus.RUNNING and record.lease_owner == self.worker_id:
            if record.request_id in self._mine:
                logger.info("duplicate delivery of a job this worker runs")
                return NotClaimed(retry_in=self.settings.visibility_timeout_seconds)
            # Our own claim, whose answer was lost (its retry found the job taken): ours.
            self._mine.add(record.request_id)
            return record
        if record.status is JobStatus.RUNNING:
            until = await self.lease_of(record.lease_owner)
            if until > self.clock():
                # Come back once that lease would lapse; this receive spends no attempt.
                logger.info(
                    "job is leased by another worker", extra={"lease_owner": record.lease_owner}
                )
                return NotClaimed(retry_in=max(1, math.ceil(until - self.clock()) + 1))
        elif record.has_attempts_left(self.max_attempts):
            return NotClaimed(retry_in=1)  # QUEUED again: a claim raced ours
        attempt = record.has_attempts_left(self.max_attempts)
        took = await self.take_over(record, attempt=attempt)
        if took is None:
            return NotClaimed(retry_in=1)
        if attempt:
            logger.info("took over a job whose worker was lost", extra={"from": record.lease_owner})
            return took
        lost = "worker lost" if record.status is JobStatus.RUNNING else "handed back"
        return ToEnd(took, f"gave up after {attempts(record.attempts)}: {lost}")

    async def take_over(self, record: JobRecord, *, attempt: bool) -> JobRecord | None:
        """Lease the job, still as `record` shows it, to this worker in the next epoch: for a new
        attempt, or (attempt False) only to end it. None if it changed meanwhile."""
        update = lease_table.take_over_job(
            self.table, record=record, worker_id=self.worker_id, now=self.clock(), attempt=attempt
        )
        took = await self._write(update)
        return self._took(took) if took is not None else None

    def _took(self, answer: dict[str, Any]) -> JobRecord:
        record = JobRecord.from_item(answer["Attributes"])
        self._mine.add(record.request_id)
        return record

    def forget(self, request_id: str) -> None:
        """This worker is done with the job (ended, released or lost)."""
        self._mine.discard(request_id)

    async def read(self, request_id: str) -> JobRecord | None:
        found = await self.aws(self.dynamodb.get_item, **job_table.get_job(self.table, request_id))
        return JobRecord.from_item(found["Item"]) if "Item" in found else None

    async def lease_of(self, worker_id: str | None) -> float:
        """Until when a worker's lease holds (0: it has none, or there is no worker)."""
        if worker_id is None:
            return 0.0
        found = await self.aws(
            self.dynamodb.get_item, **lease_table.get_worker_lease(self.table, worker_id)
        )
        return lease_table.alive_until(found.get("Item"))

    # ---- this worker's lease ----------------------------------------------------------------

    async def renew_lease(self, until: float) -> None:
        """This worker, and so every job it leases, is alive until `until`."""
        await self.aws(
            self.dynamodb.put_item,
            **lease_table.renew_worker_lease(self.table, worker_id=self.worker_id, until=until),
        )

    async def end_lease(self) -> None:
        """At shutdown, once every job is handed back: what is left is free to take at once."""
        await self.aws(
            self.dynamodb.delete_item,
            **lease_table.end_worker_lease(self.table, worker_id=self.worker_id),
        )

    # ---- ending -----------------------------------------------------------------------------

    async def succeed(
        self, record: JobRecord, output: CompletionOutput, first_token_at: float | None = None
    ) -> Stored | None:
        """The result stored and the job SUCCEEDED; None if the lease was lost (the worker
        that owns the job now stores its own result)."""
        return await self._finish(record, output=output.to_wire(), first_token_at=first_token_at)

    async def halt(
        self,
        record: JobRecord,
        status: JobStatus,
        output: CompletionOutput,
        first_token_at: float | None = None,
    ) -> Stored | None:
        """The job stopped early, CANCELLED or TIMED_OUT (`status`) with its partial output;
        None if the lease was lost."""
        return await self._finish(
            record, output=output.to_wire(), halted=status, first_token_at=first_token_at
        )

    async def fail(self, record: JobRecord, error: JobError) -> Stored | None:
        """The job FAILED for good; None if the lease was lost."""
        return await self._finish(record, error=error)

    async def finish_with_stream(
        self,
        record: JobRecord,
        output: CompletionOutput,
        halted: JobStatus | None,
        tail: StreamTail,
        first_token_at: float | None = None,
    ) -> Stored | None:
        """The stream's last flush and the final state (SUCCEEDED, or `halted`) in one
        transaction, written with those of other jobs ending meanwhile (worker/transactions.py):
        a share of one call where the flush and the result took two. None if it did not go
        through (the lease was lost, someone subscribed meanwhile, another write raced it):
        the caller then stores them the ordinary way, which tells those cases apart."""
        final = lease_table.finish_job(
            self.table,
            request_id=record.request_id,
            worker_id=self.worker_id,
            epoch=record.epoch,
            now=self.clock(),
            output=output.to_wire(),
            halted=halted,
            subscriptions=tail.subscriptions,
            first_token_at=first_token_at,
        )
        del final["ReturnValues"]  # a transaction returns no attributes
        if not await self.transactions.write([*tail.actions, {"Update": final}]):
            return None
        return Stored(subscriptions=tail.subscriptions)

    async def _finish(self, record: JobRecord, **final: Any) -> Stored | None:
        answer = await self._write(
            lease_table.finish_job(
                self.table,
                request_id=record.request_id,
                worker_id=self.worker_id,
                epoch=record.epoch,
                now=self.clock(),
                **final,
            )
        )
        if answer is None:
            return None
        count = answer.get("Attributes", {}).get("subscriptions")
        return Stored(subscriptions=int(count["N"]) if count else None)

    async def release(self, record: JobRecord, *, refund: bool = False) -> bool:
        """Back to QUEUED for another attempt (`refund`: this one does not count); False if the
        lease was lost."""
        update = lease_table.release_job(
            self.table,
            request_id=record.request_id,
            worker_id=self.worker_id,
            epoch=record.epoch,
            now=self.clock(),
            refund=refund,
        )
        return await self._write(update) is not None

    async def count_redrive(self, record: JobRecord) -> bool:
        """+1 on the job's returns from the dead-letter queue; False if the job changed."""
        update = lease_table.count_redrive(self.table, record=record, now=self.clock())
        return await self._write(update) is not None

    async def note_dead_lettered(self, record: JobRecord) -> None:
        """Record on the job that its message was found in the dead-letter queue (for the job
        view; a failure to note it is only logged)."""
        update = attempt_table.note_dead_lettered(
            self.table, key=job_table.job_key(record.request_id), now=self.clock()
        )
        try:
            await self._write(update)
        except HeadraceError as e:
            logger.warning("could not note the dead-lettered message: %s", e.detail)

    async def fail_unrecorded(self, job: JobMessage, error: JobError) -> bool:
        """A FAILED record for a job no worker ever claimed; False if it has a record now."""
        put = lease_table.fail_unrecorded_job(
            self.table,
            job=job,
            error=error,
            now=self.clock(),
            ttl_seconds=self.settings.job_ttl_seconds,
        )
        try:
            await self.aws(self.dynamodb.put_item, **put)
        except ConditionFailed:
            return False
        return True

    async def _write(self, update: dict[str, Any]) -> dict[str, Any] | None:
        """The conditional update's answer; None if its condition failed."""
        try:
            answer: dict[str, Any] = await self.aws(self.dynamodb.update_item, **update)
        except ConditionFailed:
            return None
        return answer
