"""Opening a job's stream: a new one, or, for a retried job, the one an earlier attempt began.

Every stream of a worker shares its flush budget, chunk writer and subscriber watch, so they
are made once here and handed to each job's publisher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headrace.core.aws_calls import AwsCall, call_aws_async
from headrace.core.contracts import JobMessage
from headrace.core.settings import Settings
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import JobRecord
from worker.publisher import Post, StreamLoad, StreamPublisher, StreamSettings
from worker.scheduler import Resume
from worker.stream_store import ChunkWriter, SubscriberWatch


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
        self._load = StreamLoad(settings.stream_flushes_per_second)
        self._writer = ChunkWriter(table=settings.table_name, dynamodb=dynamodb, aws=aws)
        self.subscriber_watch = SubscriberWatch(
            table=settings.table_name,
            dynamodb=dynamodb,
            aws=aws,
            interval=settings.subscriber_check_ms / 1000,
        )

    async def open(
        self, job: JobMessage, record: JobRecord
    ) -> tuple[StreamPublisher, Resume | None]:
        """The job's publisher, and what the decoder resumes from (None: from the start)."""
        settings = self.settings
        kwargs: dict[str, Any] = {
            "request_id": job.request_id,
            "attacher": f"{self.worker_id}#{record.attempts}",
            "settings": StreamSettings(
                table=settings.table_name,
                flush_interval=settings.stream_flush_ms / 1000,
                unfollowed_flush_interval=settings.stream_unfollowed_flush_ms / 1000,
                expires_at=int(self.clock()) + settings.job_ttl_seconds,
                load=self._load,
                subscribers=self.subscriber_watch,
            ),
            "aws": self.aws,
            "dynamodb": self.dynamodb,
            "post": self.post,
            "writer": self._writer,
            "event_per_token": bool(job.request.return_token_log_probs),
        }
        chunks = await self._earlier_chunks(job, record)
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

    async def _earlier_chunks(
        self, job: JobMessage, record: JobRecord
    ) -> list[stream_table.StoredChunk]:
        """What earlier attempts stored, so a retry continues their stream as one text."""
        if record.attempts <= 1:
            return []
        answer = await self.aws(
            self.dynamodb.query,
            **stream_table.query_chunks(self.settings.table_name, job.request_id),
        )
        chunks = [stream_table.StoredChunk.from_item(item) for item in answer.get("Items", [])]
        return [c for c in chunks if c.event.error is None]
