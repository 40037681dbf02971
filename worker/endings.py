"""How a worker ends a job it leases without a fresh result: a failure, another attempt, or
what an earlier attempt's stream already says.

A job's end goes to its stream before its record (the stream's last event is stored and posted
while the job is still RUNNING, so a subscriber never finds it final without one; a decoded job
stores its last flush and its result in one transaction, worker/consumer.py), and its message
is deleted once the record is final. A job out of attempts is FAILED with the reason
and its message deleted here, by the worker: SQS's own maximum of receives is only a backstop
(worker/dead_letters.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from headrace.core.contracts import JobError, JobMessage, JobStatus
from headrace.core.control import halted_event, halted_status
from headrace.core.errors import HeadraceError
from headrace.core.tables.jobs import JobRecord
from worker.job_queue import MessageQueue
from worker.lifecycle import JobLifecycle, LeaseLost, attempts
from worker.publisher import StreamPublisher
from worker.scheduler import DecodeFailed, RequestRefused
from worker.stream_opener import OpenedStream, StreamOpener

logger = logging.getLogger("headrace.worker")


class JobEndings:
    def __init__(
        self,
        *,
        lifecycle: JobLifecycle,
        queue: MessageQueue,
        streams: StreamOpener,
        max_attempts: int,
    ) -> None:
        self.lifecycle = lifecycle
        self.queue = queue
        self.streams = streams
        self.max_attempts = max_attempts

    async def decode_failed(
        self, record: JobRecord, receipt: str, publisher: StreamPublisher, e: DecodeFailed
    ) -> None:
        """FAILED for good (a request no attempt can run, or the last attempt), or back to the
        queue for another attempt."""
        if isinstance(e, RequestRefused):
            # No attempt can run this request on its model (nor is its message one for the
            # dead-letter queue).
            logger.warning("job refused: %s", e.detail)
            await self.fail(
                record, receipt, publisher, JobError(message=e.detail, type="invalid_request")
            )
            return
        if not record.has_attempts_left(self.max_attempts):
            logger.error("job failed for good", extra={"attempts": record.attempts})
            message = f"failed after {attempts(record.attempts)}: {e.detail}"
            await self.fail(
                record, receipt, publisher, JobError(message=message, type="decode_failed")
            )
            return
        logger.warning("job failed, releasing it for another attempt: %s", e.detail)
        await self.lifecycle.release(record)
        await self.queue.set_visibility(receipt, 0)

    async def fail(
        self, record: JobRecord, receipt: str | None, publisher: StreamPublisher, error: JobError
    ) -> None:
        """The stream's error event, then FAILED, then the message deleted."""
        await publisher.fail(error.message, 400 if error.type == "invalid_request" else 500)
        stored = await self.lifecycle.fail(record, error)
        if stored is None:
            raise LeaseLost("the job was taken over before its failure was stored")
        if receipt is not None:
            await self.queue.delete(receipt)
        await publisher.sweep(stored.subscriptions)

    async def end_unrun(
        self, record: JobRecord, receipt: str | None, opened: OpenedStream, reason: str
    ) -> None:
        """End a job without decoding: as its stored stream ended, else as a cancel or its
        deadline asks, or else FAILED with `reason` (a job out of attempts)."""
        ended, publisher = opened.ended, opened.publisher
        halted = record.halt_due(self.lifecycle.clock()) if ended is None else None
        if halted is not None:
            await self.end_halted(record, receipt, opened, halted)
            return
        if ended is None:
            logger.error("giving up on the job: %s", reason)
            await self.fail(
                record, receipt, publisher, JobError(message=reason, type="decode_failed")
            )
            return
        # The worker that stored the last event may have died before it posted it.
        await publisher.catch_up()
        halted = halted_status(ended)
        if halted is not None:
            stored = await self.lifecycle.halt(record, halted, opened.output())
        elif ended.error is not None:
            refused = ended.error.status_code == 400
            error = JobError(
                message=ended.error.content.error,
                type="invalid_request" if refused else "decode_failed",
            )
            stored = await self.lifecycle.fail(record, error)
        else:
            stored = await self.lifecycle.succeed(record, opened.output())
        if stored is None:
            raise LeaseLost("the job was taken over before its end was stored")
        logger.info("job ended as its stored stream did", extra={"attempt": record.attempts})
        if receipt is not None:
            await self.queue.delete(receipt)
        await publisher.sweep(stored.subscriptions)

    async def deliver_ended(self, job: JobMessage, record: JobRecord, receipt: str) -> None:
        """A leftover message of a final job (AlreadyFinal): its stream's stored events posted to
        the job's followers, then the message deleted. The worker that ended the job may have
        died between its final write and its last posts; followers drop seqs they already have."""
        if record.subscriptions:
            try:
                publisher = await self.streams.open_ended(job, record)
                await publisher.catch_up()
            except HeadraceError as e:
                # The result is stored; a follower can still subscribe again for the rest.
                logger.warning("could not deliver the ended stream: %s", e.detail)
        await self.queue.delete(receipt)

    async def end_halted(
        self, record: JobRecord, receipt: str | None, opened: OpenedStream, status: JobStatus
    ) -> None:
        """End a job undecoded (now), CANCELLED or TIMED_OUT (`status`): what earlier attempts
        streamed of it is its output; no GPU time is spent on it."""
        output = opened.partial_output()
        last = halted_event(
            record.request_id,
            status,
            text="",
            num_prompt_tokens=None,
            num_completion_tokens=output.num_completion_tokens,
        )
        await opened.publisher.end_with(last)
        stored = await self.lifecycle.halt(record, status, output)
        if stored is None:
            raise LeaseLost("the job was taken over before its end was stored")
        logger.info(
            f"job {status.value.lower().replace('_', ' ')} before it was decoded",
            extra={"completion_tokens": output.num_completion_tokens},
        )
        if receipt is not None:
            await self.queue.delete(receipt)
        await opened.publisher.sweep(stored.subscriptions)

    async def give_up(self, job: JobMessage, record: JobRecord, reason: str) -> bool:
        """Lease the job, still as `record` shows it, only to end it (FAILED with `reason`,
        unless its stream ended); False if it changed meanwhile."""
        took = await self.lifecycle.take_over(record, attempt=False)
        if took is None:
            return False
        try:
            opened = await self.streams.open(job, took)
            await self.end_unrun(took, None, opened, reason)
        except asyncio.CancelledError:
            raise
        except LeaseLost:
            return False
        except HeadraceError as e:
            logger.warning("could not give the job up: %s", e.detail)
            with contextlib.suppress(HeadraceError):
                await self.lifecycle.release(took)  # the next claim gives it up again
            return False
        finally:
            self.lifecycle.forget(job.request_id)
        return True
