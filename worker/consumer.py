"""The worker's loop: receive, claim, decode, finish, delete; heartbeat and presence beside it.

SQS is at-least-once, so every job moves only through conditional writes
(worker/lifecycle.py): a duplicate delivery of a finished job is deleted, one leased by a live
worker is left for later, and a result is stored only by the worker that holds the lease.
The rooms: receiving (worker/intake.py), the queue (worker/job_queue.py), the job's record
(worker/lifecycle.py), the heartbeat (worker/leases.py), presence (worker/presence.py) and
the job's stream (worker/stream_opener.py). This module runs one job through them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from headrace.core.contracts import JobError, JobMessage
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.core.settings import Settings
from worker.intake import Intake
from worker.job_queue import JobQueue
from worker.leases import Leases
from worker.lifecycle import JobLifecycle, NotClaimed
from worker.presence import Presence
from worker.progress import ProgressSignal, Watch
from worker.publisher import Post
from worker.scheduler import Arrival, Decoded, DecodeFailed, ModelRunner
from worker.stream_opener import StreamOpener

logger = logging.getLogger("headrace.worker")


class QueueConsumer:
    def __init__(
        self,
        settings: Settings,
        *,
        sqs: Any,
        dynamodb: Any,
        queue_url: str,
        runners: dict[str, ModelRunner],
        worker_id: str,
        post: Post,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.runners = runners
        self.worker_id = worker_id
        self.clock = clock
        self.queue = JobQueue(sqs=sqs, queue_url=queue_url)
        self.lifecycle = JobLifecycle(settings, dynamodb=dynamodb, worker_id=worker_id, clock=clock)
        self.leases = Leases(
            self.queue,
            self.lifecycle,
            visibility_timeout=settings.visibility_timeout_seconds,
            clock=clock,
        )
        self.presence = Presence(
            settings, dynamodb=dynamodb, worker_id=worker_id, models=list(runners), clock=clock
        )
        self.streams = StreamOpener(
            settings, dynamodb=dynamodb, worker_id=worker_id, post=post, clock=clock
        )
        self.intake = Intake(
            self.queue,
            runners,
            self._handle,
            receive_wait_seconds=settings.receive_wait_seconds,
            clock=clock,
        )

    async def run(self, stop: asyncio.Event) -> None:
        background = [
            asyncio.create_task(runner.serve(), name=f"runner-{name}")
            for name, runner in self.runners.items()
        ]
        background.append(asyncio.create_task(self.leases.keep_alive(), name="heartbeat"))
        background.append(
            asyncio.create_task(self.streams.subscriber_watch.run(), name="subscriber-watch")
        )
        background.append(asyncio.create_task(self.presence.announce(), name="presence"))
        self.intake.start()
        logger.info(
            "worker ready", extra={"worker_id": self.worker_id, "capacity": self.intake.capacity}
        )
        try:
            await stop.wait()
        finally:
            logger.info("worker stopping", extra={"in_flight": self.intake.in_flight})
            await self.intake.stop(grace=self.settings.shutdown_grace_seconds)
            await self.leases.release_all()
            await self.presence.withdraw()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            logger.info("worker stopped")

    async def _handle(
        self,
        message: dict[str, Any],
        job: JobMessage | ValidationError,
        arrival: Arrival | None,
        received_at: float,
    ) -> None:
        receipt = message["ReceiptHandle"]
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        if isinstance(job, ValidationError):
            # Let it come back at once: after the queue's maximum receives, SQS moves it to
            # the dead-letter queue, where someone can look at it.
            logger.error(
                "malformed job message",
                extra={
                    "message_id": message.get("MessageId"),
                    "receive_count": receive_count,
                    "reason": str(job.errors(include_url=False)[0]),
                },
            )
            await self.queue.set_visibility(receipt, 0)
            return
        with request_context(job.request_id):
            if arrival is None:
                logger.warning("model not served by this worker", extra={"model": job.model})
                await self.queue.set_visibility(receipt, 5)
                return
            await self._run_job(job, receipt, receive_count, received_at, arrival)

    async def _run_job(
        self,
        job: JobMessage,
        receipt: str,
        receive_count: int,
        received_at: float,
        arrival: Arrival,
    ) -> None:
        runner = self.runners[job.model]
        with arrival:  # the scheduler holds its batch while jobs are on their way
            record = await self.lifecycle.claim(job)
            if isinstance(record, NotClaimed):
                if record.retry_in is None:
                    await self.queue.delete(receipt)
                else:
                    await self.queue.set_visibility(receipt, record.retry_in)
                return
            # The message's visibility runs from its receipt, the lease from the claim.
            visible_at = received_at + self.settings.visibility_timeout_seconds
            lapses_at = min(visible_at, record.lease_expires_at or visible_at)
            self.leases.hold(receipt, job.request_id, lapses_at)
            publisher, resume = await self.streams.open(job, record)
        logger.info(
            "decoding",
            extra={
                "attempt": record.attempts,
                "model": job.model,
                "receive_count": receive_count,
                "resumed_tokens": len(resume.token_ids) if resume else 0,
            },
        )
        watch = Watch(ProgressSignal(asyncio.get_running_loop()))
        following = asyncio.create_task(publisher.follow(watch))
        try:
            decoded = await runner.complete(job.request_id, job.request, watch=watch, resume=resume)
            try:
                await following  # the last event is stored and posted before the job is final
            except HeadraceError as e:
                logger.warning("streaming failed; the result is stored all the same: %s", e.detail)
        except DecodeFailed as e:
            following.cancel()
            self.leases.drop(receipt)
            if receive_count >= self.settings.max_receive_count:
                await publisher.fail(e.detail)
            await self._fail_or_retry(job, receipt, receive_count, e.detail)
            return
        except BaseException:
            following.cancel()
            raise  # shutdown: the message stays held and run() releases it
        self.leases.drop(receipt)
        subscriptions = await self._succeed(job, receipt, decoded, received_at)
        await publisher.sweep(subscriptions)

    async def _succeed(
        self, job: JobMessage, receipt: str, decoded: Decoded, received_at: float
    ) -> int | None:
        """Store the result and delete the message; the job's subscription count as stored."""
        output = decoded.output
        stored = await self.lifecycle.succeed(job.request_id, output)
        if stored is None:
            # Our lease lapsed and another worker owns the job now: its result stands.
            logger.warning("lease lost before the result was stored; discarding this result")
            return None
        await self.queue.delete(receipt)
        finished_at = self.clock()
        first = decoded.first_token_at
        logger.info(
            "job succeeded",
            extra={
                "completion_tokens": output.num_completion_tokens,
                "prompt_tokens": output.num_prompt_tokens,
                "submit_to_first_token_ms": _ms(first - job.submitted_at) if first else None,
                "receive_to_first_token_ms": _ms(first - received_at) if first else None,
                "submit_to_done_ms": _ms(finished_at - job.submitted_at),
            },
        )
        return stored.subscriptions

    async def _fail_or_retry(
        self, job: JobMessage, receipt: str, receive_count: int, reason: str
    ) -> None:
        if receive_count >= self.settings.max_receive_count:
            logger.error("job failed for good", extra={"receive_count": receive_count})
            error = JobError(
                message=f"failed after {receive_count} attempts: {reason}", type="decode_failed"
            )
            await self.lifecycle.fail(job.request_id, error)
            # The message itself goes on to the dead-letter queue by redrive.
            await self.queue.set_visibility(receipt, 0)
            return
        logger.warning("job failed, releasing it for another attempt: %s", reason)
        await self.lifecycle.release(job.request_id)
        await self.queue.set_visibility(receipt, 0)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
