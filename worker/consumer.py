"""The worker's loop: receive, claim, decode, finish, delete; heartbeat and presence beside it.

SQS is at-least-once, so every job moves only through conditional writes
(worker/lifecycle.py): a duplicate delivery of a finished job is deleted (once its stored
stream is posted to its followers), one leased by a live worker is left for later (spending
none of the job's attempts), and only the worker that holds the job's lease, in the epoch it
claimed, can write anything of it, its stream included.
The rooms: receiving (worker/intake.py), the queue (worker/job_queue.py), the job's record
(worker/lifecycle.py), the heartbeat (worker/leases.py), presence (worker/presence.py), the
job's stream (worker/stream_opener.py), ending a job without a result (worker/endings.py) and
the dead-letter queue (worker/dead_letters.py). This module runs one job through them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from headrace.core.contracts import CompletionOutput, JobMessage, JobStatus
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context
from headrace.core.settings import Settings
from headrace.core.tables.jobs import JobRecord
from worker.dead_letters import DeadLetters
from worker.endings import JobEndings
from worker.halts import Halt, Halts
from worker.intake import Intake
from worker.job_queue import JobQueue
from worker.lanes import LaneQueues
from worker.leases import Leases
from worker.lifecycle import AlreadyFinal, JobLifecycle, LeaseLost, NotClaimed, Stored, ToEnd
from worker.presence import Presence
from worker.progress import ProgressSignal, Watch
from worker.publisher import Post, StreamPublisher
from worker.scheduler import Arrival, Decoded, DecodeFailed, ModelRunner
from worker.stream_opener import OpenedStream, StreamOpener
from worker.task_protection import TaskProtection

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
        dlq_url: str | None = None,
        batch_queue_url: str | None = None,
        batch_dlq_url: str | None = None,
        heartbeat_clients: tuple[Any, Any] | None = None,  # (sqs, dynamodb) of its own
        protection: TaskProtection | None = None,  # ECS scale-in protection while busy
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.runners = runners
        self.worker_id = worker_id
        self.clock = clock
        interactive = JobQueue(sqs=sqs, queue_url=queue_url)
        batch = JobQueue(sqs=sqs, queue_url=batch_queue_url) if batch_queue_url else None
        self.queue = LaneQueues(interactive, batch, batch_share=settings.batch_lane_share)
        self.lifecycle = JobLifecycle(settings, dynamodb=dynamodb, worker_id=worker_id, clock=clock)
        beat_sqs, beat_dynamodb = heartbeat_clients or (sqs, dynamodb)
        self.leases = Leases(
            self.queue.with_client(beat_sqs),
            JobLifecycle(settings, dynamodb=beat_dynamodb, worker_id=worker_id, clock=clock),
            visibility_timeout=settings.visibility_timeout_seconds,
            clock=clock,
        )
        self.presence = Presence(
            settings,
            dynamodb=dynamodb,
            worker_id=worker_id,
            context_lengths={name: r.engine.max_context_tokens for name, r in runners.items()},
            clock=clock,
            lanes={"interactive": interactive, **({"batch": batch} if batch else {})},
        )
        self.streams = StreamOpener(
            settings, dynamodb=dynamodb, worker_id=worker_id, post=post, clock=clock
        )
        self.halts = Halts(self.streams.subscriber_watch)  # cancels and deadlines
        self.endings = JobEndings(
            lifecycle=self.lifecycle,
            queue=self.queue,
            streams=self.streams,
            max_attempts=settings.max_attempts,
        )
        # Each lane's dead-letter queue is watched; a message redriven goes back to its lane.
        self.dead_letters = [
            DeadLetters(
                dlq=JobQueue(sqs=sqs, queue_url=lane_dlq_url),
                jobs=lane_queue,
                lifecycle=self.lifecycle,
                give_up=self.endings.give_up,
                max_attempts=settings.max_attempts,
                interval=settings.dead_letter_check_seconds,
                clock=clock,
            )
            for lane_queue, lane_dlq_url in ((interactive, dlq_url), (batch, batch_dlq_url))
            if lane_queue is not None and lane_dlq_url
        ]
        self.intake = Intake(
            self.queue,
            runners,
            self._handle,
            receive_wait_seconds=settings.receive_wait_seconds,
            clock=clock,
            on_load=protection.load if protection is not None else None,
        )
        self.protection = protection

    async def run(self, stop: asyncio.Event) -> None:
        # No claim before this worker holds a lease: a job leased to a worker without one is
        # free for any other to take.
        if not (await self.leases.beat()).renewed:
            raise HeadraceError("could not take this worker's lease")
        background = [
            asyncio.create_task(runner.serve(), name=f"runner-{name}")
            for name, runner in self.runners.items()
        ]
        heartbeat = asyncio.create_task(self.leases.keep_alive(), name="heartbeat")
        background.append(
            asyncio.create_task(self.streams.subscriber_watch.run(), name="subscriber-watch")
        )
        background.append(asyncio.create_task(self.presence.announce(), name="presence"))
        for dead_letters in self.dead_letters:
            background.append(asyncio.create_task(dead_letters.run(), name="dead-letters"))
        protecting = (
            asyncio.create_task(self.protection.run(), name="task-protection")
            if self.protection is not None
            else None
        )
        self.intake.start()
        logger.info(
            "worker ready", extra={"worker_id": self.worker_id, "capacity": self.intake.capacity}
        )
        try:
            await stop.wait()
        finally:
            logger.info("worker stopping", extra={"in_flight": self.intake.in_flight})
            await self.intake.stop(grace=self.settings.shutdown_grace_seconds)
            heartbeat.cancel()  # before the lease ends: no beat may take it again
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self.leases.release_all()
            await self.presence.withdraw()
            if protecting is not None and self.protection is not None:
                protecting.cancel()
                await asyncio.gather(protecting, return_exceptions=True)
                await self.protection.clear()  # nothing is held any more
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
        claim = await self.lifecycle.claim(job)
        if isinstance(claim, NotClaimed):
            arrival.done()
            await self.queue.set_visibility(receipt, claim.retry_in)
            return
        if isinstance(claim, AlreadyFinal):
            arrival.done()
            await self.endings.deliver_ended(job, claim.record, receipt)
            return
        record = claim.record if isinstance(claim, ToEnd) else claim
        visible_at = received_at + self.settings.visibility_timeout_seconds
        self.leases.hold(receipt, record, visible_at, attempt=not isinstance(claim, ToEnd))
        try:
            opened = await self.streams.open(job, record)
            # Cancelled, or past its deadline, already: it ends undecoded (worker/endings.py).
            halted = record.halt_due(self.clock()) is not None
            if isinstance(claim, ToEnd) or opened.ended is not None or halted:
                arrival.done()
                reason = claim.reason if isinstance(claim, ToEnd) else ""
                await self.endings.end_unrun(record, receipt, opened, reason)
            else:
                await self._decode(
                    job, record, receipt, receive_count, received_at, opened, arrival
                )
        except asyncio.CancelledError:
            raise  # shutdown: the message stays held and run() hands the job back
        except LeaseLost as e:
            logger.warning("%s; this worker writes nothing more of the job", e.detail)
        except HeadraceError as e:
            logger.error("could not run the job, handing it back: %s", e.detail)
            await self._hand_back(record, receipt)
        self.leases.drop(receipt)
        self.lifecycle.forget(job.request_id)

    async def _decode(
        self,
        job: JobMessage,
        record: JobRecord,
        receipt: str,
        receive_count: int,
        received_at: float,
        opened: OpenedStream,
        arrival: Arrival,
    ) -> None:
        publisher = opened.publisher
        logger.info(
            "decoding",
            extra={
                "attempt": record.attempts,
                "model": job.model,
                "receive_count": receive_count,
                "resumed_tokens": len(opened.resume.token_ids) if opened.resume else 0,
            },
        )
        watch = Watch(ProgressSignal(asyncio.get_running_loop()))
        halt = self.halts.start(
            job.request_id,
            record.deadline,
            on_due=self.runners[job.model].halt_waiting,
            tokens=lambda: watch.progress(since=1 << 62).num_tokens if watch.source else 0,
        )
        following = asyncio.create_task(publisher.follow(watch))
        decoding = asyncio.create_task(self._complete(job, watch, opened, arrival, halt))
        try:
            await asyncio.wait({decoding, following}, return_when=asyncio.FIRST_EXCEPTION)
            if _lost(following):
                decoding.cancel()  # the job is another worker's now: stop decoding it
                following.result()  # raises LeaseLost
            try:
                decoded = await decoding
            except DecodeFailed as e:
                following.cancel()
                await self.endings.decode_failed(record, receipt, publisher, e)
                return
            try:
                # The last flush is held to be stored with the result (_store_result).
                await following
            except LeaseLost:
                raise
            except HeadraceError as e:
                logger.warning("streaming failed; the result is stored all the same: %s", e.detail)
        finally:
            self.halts.stop(job.request_id)
            for task in (following, decoding):
                task.cancel()
                if task.done() and not task.cancelled():
                    task.exception()  # seen: what it raised is handled above or moot now
        await self._succeed(
            record, receipt, decoded, job.submitted_at, received_at, publisher, halt
        )

    async def _complete(
        self, job: JobMessage, watch: Watch, opened: OpenedStream, arrival: Arrival, halt: Halt
    ) -> Decoded:
        # On its way until the very step that hands it to the scheduler: never neither.
        arrival.done()
        runner = self.runners[job.model]
        return await runner.complete(
            job.request_id, job.request, watch=watch, resume=opened.resume, halt=halt
        )

    async def _succeed(
        self,
        record: JobRecord,
        receipt: str,
        decoded: Decoded,
        submitted_at: float,
        received_at: float,
        publisher: StreamPublisher,
        halt: Halt,
    ) -> None:
        """Store the result (partial if it stopped early), delete the message, deliver to late
        subscribers."""
        output = decoded.output
        stored = await self._store_result(
            record, output, halt.stopped, publisher, decoded.first_token_at
        )
        if stored is None:
            # Another worker owns the job now: its result stands.
            raise LeaseLost("lease lost before the result was stored; discarding this result")
        await self.queue.delete(receipt)
        finished_at = self.clock()
        first = decoded.first_token_at
        logger.info(
            f"job {halt.stopped.value.lower().replace('_', ' ')}"
            if halt.stopped
            else "job succeeded",
            extra={
                "stopped_at": halt.stopped_at,
                "completion_tokens": output.num_completion_tokens,
                "prompt_tokens": output.num_prompt_tokens,
                "submit_to_first_token_ms": _ms(first - submitted_at) if first else None,
                "receive_to_first_token_ms": _ms(first - received_at) if first else None,
                "submit_to_done_ms": _ms(finished_at - submitted_at),
            },
        )
        await publisher.sweep(stored.subscriptions)

    async def _store_result(
        self,
        record: JobRecord,
        output: CompletionOutput,
        halted: JobStatus | None,
        publisher: StreamPublisher,
        first_token_at: float | None,
    ) -> Stored | None:
        """The stream's held last flush and the result in one transaction where it can be,
        else the flush and then the result (None: the lease was lost)."""
        tail = publisher.last_flush()
        if tail is not None:
            stored = await self.lifecycle.finish_with_stream(
                record, output, halted, tail, first_token_at
            )
            if stored is not None:
                try:
                    await publisher.last_flush_stored()
                except HeadraceError as e:
                    logger.warning("could not post the last events: %s", e.detail)
                return stored
        try:
            await publisher.store_last_flush()
        except LeaseLost:
            raise
        except HeadraceError as e:
            logger.warning("streaming failed; the result is stored all the same: %s", e.detail)
        if halted is not None:
            return await self.lifecycle.halt(record, halted, output, first_token_at)
        return await self.lifecycle.succeed(record, output, first_token_at)

    async def _hand_back(self, record: JobRecord, receipt: str) -> None:
        """Back to QUEUED, message visible at once: another worker (or this one) tries again."""
        try:
            await self.lifecycle.release(record)
        except HeadraceError as e:
            logger.warning("could not hand the job back: %s", e.detail)
        await self.queue.set_visibility(receipt, 0)


def _lost(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and isinstance(task.exception(), LeaseLost)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
