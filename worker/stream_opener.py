"""Opening a job's stream: a new one, or, for a retried job, the one earlier attempts began.

A retry takes the stream over for its lease epoch first (worker/stream_store.py StreamFence):
from then on the worker of an earlier attempt can add nothing, so what the retry reads is all
there will be of the earlier attempts. It stores the last flush they committed, if they did not,
and continues after it: the same seqs, one text. A stream that ended (its last event is stored)
ended the job: the retry decodes nothing and stores what the stream says.

Every stream of a worker shares its flush budget, chunk writer and subscriber watch, so they
are made once here and handed to each job's publisher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from headrace.core.aws_calls import AwsCall, call_aws_async
from headrace.core.contracts import CompletionOutput, JobMessage, StreamEvent
from headrace.core.errors import HeadraceError
from headrace.core.settings import Settings
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import Item, JobRecord
from worker.publisher import Post, StreamPublisher
from worker.scheduler import Resume
from worker.stream_settings import StreamLoad, StreamSettings
from worker.stream_store import ChunkWriter, StreamFence, SubscriberWatch
from worker.transactions import TransactionGroups


@dataclass(frozen=True)
class OpenedStream:
    publisher: StreamPublisher
    resume: Resume | None  # what the decoder continues after (None: from the start)
    ended: StreamEvent | None  # the stream's last event, if earlier attempts stored it

    def output(self) -> CompletionOutput:
        """The result an ended stream shows (its last event finished, not failed)."""
        assert self.ended is not None and self.ended.output is not None
        events = [e.output for e in self.publisher.events if e.output is not None]
        return CompletionOutput(
            text="".join(e.text for e in events),
            num_prompt_tokens=self.ended.output.num_prompt_tokens,
            num_completion_tokens=self.ended.output.num_completion_tokens or 0,
            tokens=[e.token for e in events if e.token] if self.publisher.event_per_token else None,
        )

    def partial_output(self) -> CompletionOutput:
        """The result of a job that ends now without decoding (cancelled, or past its
        deadline): what earlier attempts streamed of it, if anything."""
        events = [e.output for e in self.publisher.events if e.output is not None]
        return CompletionOutput(
            text="".join(e.text for e in events),
            num_completion_tokens=self.publisher.tokens_sent,
            tokens=[e.token for e in events if e.token] if self.publisher.event_per_token else None,
        )


class StreamOpener:
    def __init__(
        self,
        settings: Settings,
        *,
        dynamodb: Any,
        worker_id: str,
        post: Post,
        clock: Callable[[], float],
        aws: AwsCall = call_aws_async,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.worker_id = worker_id
        self.post = post
        self.clock = clock
        self.aws = aws
        self._load = StreamLoad(settings.stream_posts_per_second)
        self._writer = ChunkWriter(table=settings.table_name, dynamodb=dynamodb, aws=aws)
        self._flushes = TransactionGroups(dynamodb=dynamodb, aws=aws)
        self.subscriber_watch = SubscriberWatch(
            table=settings.table_name,
            dynamodb=dynamodb,
            aws=aws,
            # One read serves both checks, at the shorter interval.
            interval=min(settings.subscriber_check_ms, settings.cancel_check_ms) / 1000,
        )

    async def open(self, job: JobMessage, record: JobRecord) -> OpenedStream:
        """The job's stream for this worker's lease epoch. Raises LeaseLost if a later epoch
        took the stream over first."""
        fence, kwargs = self._publisher_parts(job, record)
        # Epoch 1 is the job's first claim: no stream can exist yet.
        chunks = await self._take_over(fence) if record.epoch > 1 else []
        publisher = StreamPublisher.resumed(chunks, **kwargs)
        publisher.subscriptions_seen(record.subscriptions)  # e.g. the connection that submitted
        # A first claim's only: a retried job's subscriptions say how far each was delivered.
        if record.epoch == 1 and record.first_follower is not None:
            publisher.expect_first_follower(*record.first_follower)
        if chunks and chunks[-1].event.is_last:
            return OpenedStream(publisher, None, chunks[-1].event)
        resume = None
        if chunks:
            resume = Resume(
                token_ids=[i for c in chunks for i in c.token_ids],
                tokens=[
                    c.event.output.token for c in chunks if c.event.output and c.event.output.token
                ],
            )
        return OpenedStream(publisher, resume, None)

    async def open_ended(self, job: JobMessage, record: JobRecord) -> StreamPublisher:
        """The stream of a job that is final, only to deliver what it stored: nothing more is
        written to it, so it is read as it is, not taken over (the final write stored its last
        flush, so every chunk is there)."""
        _, kwargs = self._publisher_parts(job, record)
        stored = await self._stored_items(job.request_id)
        chunks: list[stream_table.StoredChunk] = []
        while len(chunks) in stored:
            chunks.append(stream_table.StoredChunk.from_item(stored[len(chunks)]))
        return StreamPublisher.resumed(chunks, **kwargs)

    def _publisher_parts(
        self, job: JobMessage, record: JobRecord
    ) -> tuple[StreamFence, dict[str, Any]]:
        """The job's fence for this lease epoch and the rest of what its publisher is made of."""
        settings = self.settings
        expires_at = int(self.clock()) + settings.job_ttl_seconds
        fence = StreamFence(
            table=settings.table_name,
            request_id=job.request_id,
            epoch=record.epoch,
            dynamodb=self.dynamodb,
            aws=self.aws,
            expires_at=expires_at,
            flushes=self._flushes,
        )
        kwargs: dict[str, Any] = {
            "request_id": job.request_id,
            "attacher": f"{self.worker_id}#{record.epoch}",
            "settings": StreamSettings(
                table=settings.table_name,
                flush_interval=settings.stream_flush_ms / 1000,
                unfollowed_flush_interval=settings.stream_unfollowed_flush_ms / 1000,
                interval_tokens=settings.stream_interval_tokens,
                expires_at=expires_at,
                load=self._load,
                subscribers=self.subscriber_watch,
            ),
            "aws": self.aws,
            "dynamodb": self.dynamodb,
            "post": self.post,
            "writer": self._writer,
            "fence": fence,
            "event_per_token": bool(job.request.return_token_log_probs),
        }
        return fence, kwargs

    async def _take_over(self, fence: StreamFence) -> list[stream_table.StoredChunk]:
        """What earlier attempts committed, every chunk of it stored."""
        head = await fence.open()
        stored = await self._stored_items(fence.request_id)
        missing = [i for i in head.tail if stream_table.chunk_seq(i) not in stored]
        if missing:
            await self._writer.put(missing)
            stored.update((stream_table.chunk_seq(i), i) for i in missing)
        gaps = [seq for seq in range(head.next_seq) if seq not in stored]
        if gaps:
            raise HeadraceError(f"the stored stream lacks seq {gaps[0]} of {head.next_seq}")
        return [stream_table.StoredChunk.from_item(stored[s]) for s in range(head.next_seq)]

    async def _stored_items(self, request_id: str) -> dict[int, Item]:
        query = stream_table.query_chunks(self.settings.table_name, request_id)
        stored: dict[int, Item] = {}
        while True:
            answer = await self.aws(self.dynamodb.query, **query)
            stored.update((stream_table.chunk_seq(i), i) for i in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return stored
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
