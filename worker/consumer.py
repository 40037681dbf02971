"""The queue side of the worker: receive, claim, decode, finish, delete; heartbeat and presence.

SQS is at-least-once, so every job moves only through conditional writes
(headrace.core.tables.jobs): a duplicate delivery of a finished job is deleted, one leased by a
live worker is left for later, and a result is stored only by the worker that holds the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from headrace.core.contracts import JobError, JobMessage
from headrace.core.errors import ConditionFailed, HeadraceError, Throttled, TransientError
from headrace.core.logs import request_context
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import JobRecord
from worker.aws_calls import call_aws
from worker.leases import Leases, set_visibility
from worker.publisher import Post, StreamLoad, StreamPublisher, StreamSettings
from worker.scheduler import (
    Arrival,
    Decoded,
    DecodeFailed,
    ModelRunner,
    ProgressSignal,
    Resume,
    Watch,
)
from worker.stream_store import ChunkWriter, SubscriberWatch

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
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.queue_url = queue_url
        self.runners = runners
        self.worker_id = worker_id
        self.post = post
        self.clock = clock
        # Bounded prefetch: what the models' schedulers may hold (running or waiting), and no
        # more, so other workers are not starved.
        self.capacity = sum(r.prefetch for r in runners.values())
        self._stopping = False
        self._stream_load = StreamLoad(settings.stream_flushes_per_second)
        self._chunk_writer = ChunkWriter(table=settings.table_name, dynamodb=dynamodb, aws=call_aws)
        self._subscriber_watch = SubscriberWatch(
            table=settings.table_name,
            dynamodb=dynamodb,
            aws=call_aws,
            interval=settings.subscriber_check_ms / 1000,
        )
        self._leases = Leases(
            settings,
            sqs=sqs,
            dynamodb=dynamodb,
            queue_url=queue_url,
            worker_id=worker_id,
            clock=clock,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()

    # ---- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        background = [
            asyncio.create_task(runner.serve(), name=f"runner-{name}")
            for name, runner in self.runners.items()
        ]
        background.append(asyncio.create_task(self._leases.keep_alive(), name="heartbeat"))
        background.append(
            asyncio.create_task(self._subscriber_watch.run(), name="subscriber-watch")
        )
        background.append(asyncio.create_task(self._announce_presence(), name="presence"))
        receiving = asyncio.create_task(self._receive_loop(), name="receive")
        logger.info("worker ready", extra={"worker_id": self.worker_id, "capacity": self.capacity})
        try:
            await stop.wait()
        finally:
            logger.info("worker stopping", extra={"in_flight": len(self._tasks)})
            # Let a long poll in flight return rather than cancel it: a cancelled poll may still
            # take messages server-side, which then stay invisible for a whole timeout.
            self._stopping = True
            self._slot_freed.set()
            try:
                await asyncio.wait_for(receiving, self.settings.receive_wait_seconds + 5)
            except TimeoutError:
                receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiving
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.settings.shutdown_grace_seconds)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._leases.release_all()
            await self._withdraw_presence()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            logger.info("worker stopped")

    async def _receive_loop(self) -> None:
        while not self._stopping:
            free = self.capacity - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                response = await call_aws(
                    self.sqs.receive_message,
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, free),
                    WaitTimeSeconds=self.settings.receive_wait_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except (TransientError, Throttled) as e:
                logger.warning("receive failed, backing off: %s", e.detail)
                await asyncio.sleep(1.0)
                continue
            messages = response.get("Messages", [])
            if self._stopping:
                for message in messages:  # received as we stopped: straight back to the queue
                    await self._set_visibility(message["ReceiptHandle"], 0)
                return
            for message in messages:
                self._accept(message)
            self._set_intake_full(len(self._tasks) >= self.capacity)

    def _accept(self, message: dict[str, Any]) -> None:
        """Start a received message's task. Its job counts as on its way to the model's
        scheduler from here, before the task first runs."""
        received_at = self.clock()
        try:
            job: JobMessage | ValidationError = JobMessage.model_validate_json(message["Body"])
        except ValidationError as e:
            job = e
        runner = self.runners.get(job.model) if isinstance(job, JobMessage) else None
        arrival = runner.arrival() if runner is not None else None
        task = asyncio.create_task(self._handle(message, job, arrival, received_at))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if arrival is not None:
            task.add_done_callback(lambda _: arrival.done())  # even if cancelled before it ran

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()
        self._set_intake_full(len(self._tasks) >= self.capacity)
        if not task.cancelled() and task.exception() is not None:
            logger.error("message handler crashed", exc_info=task.exception())

    def _set_intake_full(self, full: bool) -> None:
        for runner in self.runners.values():
            runner.set_intake_full(full)

    # ---- one message ----------------------------------------------------------------------

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
            await self._set_visibility(receipt, 0)
            return
        with request_context(job.request_id):
            if arrival is None:
                logger.warning("model not served by this worker", extra={"model": job.model})
                await self._set_visibility(receipt, 5)
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
            record = await self._claim(job, receipt)
            if record is None:
                return
            # The message's visibility runs from its receipt, the lease from the claim.
            visible_at = received_at + self.settings.visibility_timeout_seconds
            lapses_at = min(visible_at, record.lease_expires_at or visible_at)
            self._leases.hold(receipt, job.request_id, lapses_at)
            publisher, resume = await self._open_stream(job, record)
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
            self._leases.drop(receipt)
            if receive_count >= self.settings.max_receive_count:
                await publisher.fail(e.detail)
            await self._fail_or_retry(job, receipt, receive_count, e.detail)
            return
        except BaseException:
            following.cancel()
            raise  # shutdown: the message stays held and run() releases it
        self._leases.drop(receipt)
        subscriptions = await self._succeed(job, receipt, decoded, received_at)
        await publisher.sweep(subscriptions)

    async def _open_stream(
        self, job: JobMessage, record: JobRecord
    ) -> tuple[StreamPublisher, Resume | None]:
        kwargs: dict[str, Any] = {
            "request_id": job.request_id,
            "attacher": f"{self.worker_id}#{record.attempts}",
            "settings": StreamSettings(
                table=self.settings.table_name,
                flush_interval=self.settings.stream_flush_ms / 1000,
                unfollowed_flush_interval=self.settings.stream_unfollowed_flush_ms / 1000,
                expires_at=int(self.clock()) + self.settings.job_ttl_seconds,
                load=self._stream_load,
                subscribers=self._subscriber_watch,
            ),
            "aws": call_aws,
            "dynamodb": self.dynamodb,
            "post": self.post,
            "writer": self._chunk_writer,
        }
        chunks: list[stream_table.StoredChunk] = []
        if record.attempts > 1:
            # A retry continues the stream an earlier attempt began, so clients see one text.
            answer = await call_aws(
                self.dynamodb.query,
                **stream_table.query_chunks(self.settings.table_name, job.request_id),
            )
            chunks = [stream_table.StoredChunk.from_item(item) for item in answer.get("Items", [])]
            chunks = [c for c in chunks if c.event.error is None]
        resume = None
        if chunks:
            publisher = StreamPublisher.resumed(chunks, **kwargs)
            resume = Resume(
                token_ids=[i for c in chunks for i in c.token_ids],
                tokens=[
                    c.event.output.token for c in chunks if c.event.output and c.event.output.token
                ],
            )
        else:
            publisher = StreamPublisher(**kwargs)
        publisher.subscriptions_seen(record.subscriptions)  # e.g. the connection that submitted
        return publisher, resume

    async def _claim(self, job: JobMessage, receipt: str) -> JobRecord | None:
        now = self.clock()
        lease_seconds = self.settings.visibility_timeout_seconds
        table = self.settings.table_name
        record = await self._try_claim(
            job_table.claim_recorded_job(
                table,
                request_id=job.request_id,
                worker_id=self.worker_id,
                now=now,
                lease_seconds=lease_seconds,
            )
        )
        if record is not None:
            return record
        found = await call_aws(self.dynamodb.get_item, **job_table.get_job(table, job.request_id))
        if "Item" not in found:
            # Event-driven submits enqueue without a record: the claim writes it.
            record = await self._try_claim(
                job_table.claim_job(
                    table,
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
            if record is None:  # another worker wrote it first: see whose it is shortly
                await self._set_visibility(receipt, 1)
            return record
        record = JobRecord.from_item(found["Item"])
        if record.status.is_final:
            logger.info("duplicate delivery of a finished job; deleting the message")
            await self._delete(receipt)
        elif record.lease_expires_at:
            # Leased by a live worker: come back just after that lease would lapse.
            wait = max(1, int(record.lease_expires_at - self.clock()) + 1)
            logger.info(
                "job is leased by another worker", extra={"lease_owner": record.lease_owner}
            )
            await self._set_visibility(receipt, min(wait, 43_200))
        else:
            await self._set_visibility(receipt, 0)
        return None

    async def _try_claim(self, claim: dict[str, Any]) -> JobRecord | None:
        try:
            response = await call_aws(self.dynamodb.update_item, **claim)
        except ConditionFailed:
            return None
        return JobRecord.from_item(response["Attributes"])

    async def _succeed(
        self, job: JobMessage, receipt: str, decoded: Decoded, received_at: float
    ) -> int | None:
        """Store the result and delete the message; the job's subscription count as stored."""
        output = decoded.output
        try:
            answer = await call_aws(
                self.dynamodb.update_item,
                **job_table.finish_job(
                    self.settings.table_name,
                    request_id=job.request_id,
                    worker_id=self.worker_id,
                    now=self.clock(),
                    output=output.to_wire(),
                ),
            )
        except ConditionFailed:
            # Our lease lapsed and another worker owns the job now: its result stands.
            logger.warning("lease lost before the result was stored; discarding this result")
            return None
        await self._delete(receipt)
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
        count = answer.get("Attributes", {}).get("subscriptions")
        return int(count["N"]) if count else None

    async def _fail_or_retry(
        self, job: JobMessage, receipt: str, receive_count: int, reason: str
    ) -> None:
        table = self.settings.table_name
        if receive_count >= self.settings.max_receive_count:
            logger.error("job failed for good", extra={"receive_count": receive_count})
            with contextlib.suppress(ConditionFailed):
                await call_aws(
                    self.dynamodb.update_item,
                    **job_table.finish_job(
                        table,
                        request_id=job.request_id,
                        worker_id=self.worker_id,
                        now=self.clock(),
                        error=JobError(
                            message=f"failed after {receive_count} attempts: {reason}",
                            type="decode_failed",
                        ),
                    ),
                )
            # The message itself goes on to the dead-letter queue by redrive.
            await self._set_visibility(receipt, 0)
            return
        logger.warning("job failed, releasing it for another attempt: %s", reason)
        with contextlib.suppress(ConditionFailed):
            await call_aws(
                self.dynamodb.update_item,
                **job_table.release_job(
                    table, request_id=job.request_id, worker_id=self.worker_id, now=self.clock()
                ),
            )
        await self._set_visibility(receipt, 0)

    # ---- presence ----------------------------------------------------------------------------

    async def _announce_presence(self) -> None:
        ttl = self.settings.presence_ttl_seconds
        while True:
            for name in self.runners:
                try:
                    await call_aws(
                        self.dynamodb.put_item,
                        **job_table.put_presence(
                            self.settings.table_name,
                            model=name,
                            worker_id=self.worker_id,
                            until=self.clock() + ttl,
                        ),
                    )
                except (TransientError, Throttled) as e:
                    logger.warning("could not announce presence: %s", e.detail)
            await asyncio.sleep(max(1.0, ttl / 3))

    async def _withdraw_presence(self) -> None:
        for name in self.runners:
            with contextlib.suppress(TransientError, Throttled):
                await call_aws(
                    self.dynamodb.put_item,
                    **job_table.put_presence(
                        self.settings.table_name,
                        model=name,
                        worker_id=self.worker_id,
                        until=self.clock(),
                    ),
                )

    # ---- AWS calls --------------------------------------------------------------------------

    async def _delete(self, receipt: str) -> None:
        try:
            await call_aws(self.sqs.delete_message, QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except HeadraceError as e:
            # The message comes back later and is deleted then, as a duplicate of a final job.
            logger.warning("could not delete the message: %s", e.detail)

    async def _set_visibility(self, receipt: str, seconds: int) -> None:
        await set_visibility(self.sqs, self.queue_url, receipt, seconds)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
