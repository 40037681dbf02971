"""The dead-letter queue, watched: no job whose message lands there is left unfinished.

A worker counts a job's attempts itself and ends the job when they run out (worker/endings.py);
SQS's maximum of receives is a backstop above that. But SQS counts every receive, those that
found the job leased to a live worker too, so a job's message can reach the dead-letter queue
while the job still has attempts, or while a live worker runs it. Every worker looks there
every `dead_letter_check_seconds`, and for each job message:

- the job is final: the message is deleted (the job's record holds its request and its end);
- the job has attempts left, or a live worker runs it: the message goes back to the jobs queue
  (delayed until that worker's lease would lapse), at most `max_attempts` times per job;
- otherwise the job is given up: FAILED with the reason, and the message is deleted.

A message that is not a job is left there for someone to look at.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from headrace.core.contracts import JobError, JobMessage, JobStatus
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.core.tables.jobs import JobRecord
from worker.job_queue import JobQueue
from worker.lifecycle import JobLifecycle, attempts

logger = logging.getLogger("headrace.worker")

# (job, its record as read, reason) -> whether the job is final now
GiveUp = Callable[[JobMessage, JobRecord, str], Awaitable[bool]]

PAGES_PER_CHECK = 10  # receives of up to 10 messages each
HIDE_S = 30  # the longest a check keeps a message out of sight (it shows them again at its end)


class DeadLetters:
    def __init__(
        self,
        *,
        dlq: JobQueue,
        jobs: JobQueue,
        lifecycle: JobLifecycle,
        give_up: GiveUp,
        max_attempts: int,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.dlq = dlq
        self.jobs = jobs
        self.lifecycle = lifecycle
        self.give_up = give_up
        self.max_attempts = max_attempts
        self.interval = interval
        self.clock = clock

    async def run(self) -> None:
        """Check every `interval` until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except HeadraceError as e:
                logger.warning("could not check the dead-letter queue: %s", e.detail)

    async def check(self) -> int:
        """Settle the job messages found; how many left the dead-letter queue."""
        settled = 0
        left: list[str] = []  # receipts of what stays: shown again once the check is done
        try:
            for _ in range(PAGES_PER_CHECK):
                # Out of sight while the check pages on, so that each page brings new ones.
                messages = await self.dlq.receive(
                    max_messages=10, wait_seconds=0, hide_seconds=HIDE_S
                )
                if not messages:
                    break
                for message in messages:
                    if await self._settle(message):
                        settled += 1
                    else:
                        left.append(message["ReceiptHandle"])
        finally:
            await self.dlq.extend_visibility(left, 0)
        return settled

    async def _settle(self, message: dict[str, Any]) -> bool:
        try:
            job = JobMessage.model_validate_json(message["Body"])
        except ValidationError:
            return False  # not a job: it stays for someone to look at
        with request_context(job.request_id):
            if await self._settle_job(job, message["Body"]):
                await self.dlq.delete(message["ReceiptHandle"])
                return True
        return False

    async def _settle_job(self, job: JobMessage, body: str) -> bool:
        """True once the message may leave the dead-letter queue: its job is final, or the
        message is back in the jobs queue."""
        record = await self.lifecycle.read(job.request_id)
        if record is None:
            logger.error("a job message was dead-lettered before any claim; the job FAILED")
            reason = "gave up: no worker claimed the job before its message was dead-lettered"
            error = JobError(message=reason, type="decode_failed")
            return await self.lifecycle.fail_unrecorded(job, error)
        await self.lifecycle.note_dead_lettered(record)
        if record.status.is_final:
            return True
        running = record.status is JobStatus.RUNNING
        lease = await self.lifecycle.lease_of(record.lease_owner) if running else 0.0
        live = lease > self.clock()
        left = record.has_attempts_left(self.max_attempts)
        if record.redriven < self.max_attempts and (live or left):
            if not await self.lifecycle.count_redrive(record):
                return False  # it changed meanwhile: look again at the next check
            delay = math.ceil(lease - self.clock()) + 1 if live else 0
            await self.jobs.send(body, delay_seconds=delay)
            logger.warning(
                "job message dead-lettered; sent back to the jobs queue",
                extra={"attempts": record.attempts, "redriven": record.redriven + 1},
            )
            return True
        if record.redriven >= self.max_attempts:
            reason = f"gave up: its message was dead-lettered {record.redriven + 1} times"
        else:
            lost = "worker lost" if running else "handed back"
            reason = f"gave up after {attempts(record.attempts)}: {lost}"
        return await self.give_up(job, record, reason)
