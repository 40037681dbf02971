"""What the worker's AWS tests share: fresh resources on the moto server, the worker's own AWS
call counted, jobs and their followers, stream chunks to store, and a job's stream publisher."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import aioboto3
import boto3

from headrace.core.aws_calls import call_aws_async
from headrace.core.contracts import CompletionRequest, StreamEvent, StreamOutput
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.moto import MOTO_CREDENTIALS
from infra.provision import AwsClients, ProvisionedResources, provision
from worker.publisher import Post, StreamPublisher
from worker.stream_settings import StreamSettings
from worker.stream_store import ChunkWriter, StreamFence
from worker.transactions import TransactionGroups

T = TypeVar("T")

REQUEST = CompletionRequest(prompt="x", max_new_tokens=4)


def new_job(table: str, request_id: str) -> dict[str, Any]:
    """The PutItem of a job's record as the API writes it."""
    return job_table.put_new_job(
        table,
        request_id=request_id,
        owner="o",
        model="m",
        request=REQUEST,
        now=time.time(),
        ttl_seconds=60,
    )


async def job_with_followers(
    dynamodb: Any, table: str, request_id: str, connections: tuple[str, ...]
) -> None:
    """A job's record, and `connections` following it as the WebSocket handler records them."""
    await dynamodb.put_item(**new_job(table, request_id))
    for connection in connections:
        await dynamodb.transact_write_items(
            **connection_table.add_subscription(
                table,
                request_id=request_id,
                connection_id=connection,
                endpoint="https://example.invalid",
                from_seq=0,
                now=time.time(),
            )
        )


@contextmanager
def fresh_resources(moto_endpoint: str, prefix: str) -> Iterator[ProvisionedResources]:
    """The template's resources under a stack name of their own."""
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    clients = AwsClients.create(moto_endpoint, session=session)
    try:
        yield provision(clients, stack_name=f"{prefix}{uuid.uuid4().hex[:10]}")
    finally:
        clients.close()


def run(moto_endpoint: str, body: Callable[[Any, Any], Awaitable[T]]) -> T:
    async def with_clients() -> T:
        session = aioboto3.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        async with (
            session.client("dynamodb", endpoint_url=moto_endpoint) as dynamodb,
            session.client("sqs", endpoint_url=moto_endpoint) as sqs,
        ):
            return await body(dynamodb, sqs)

    return asyncio.run(asyncio.wait_for(with_clients(), 60))


class CountingAws:
    """The worker's own AWS call, counted by operation."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def __call__(self, operation: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
        name = operation.__name__
        self.calls[name] = self.calls.get(name, 0) + 1
        return await call_aws_async(operation, **kwargs)


def chunk(table: str, request_id: str, seq: int) -> job_table.Item:
    event = StreamEvent(
        request_id=request_id,
        seq=seq,
        output=StreamOutput(text=f"t{seq}", finished=False, num_completion_tokens=seq + 1),
    )
    item: job_table.Item = stream_table.put_chunk(
        table, request_id=request_id, event=event, token_ids=[seq], expires_at=0
    )["Item"]
    return item


async def _delivered(endpoint: str, connection_id: str, data: bytes) -> bool:
    return True


def publisher_of(
    request_id: str,
    table: str,
    dynamodb: Any,
    aws: CountingAws,
    groups: TransactionGroups,
    *,
    post: Post = _delivered,
    attacher: str = "w#1",
) -> StreamPublisher:
    """A job's publisher as a worker's first claim of it makes one (lease epoch 1)."""
    return StreamPublisher(
        request_id=request_id,
        attacher=attacher,
        settings=StreamSettings(table=table),
        aws=aws,
        dynamodb=dynamodb,
        post=post,
        writer=ChunkWriter(table=table, dynamodb=dynamodb, aws=aws),
        fence=StreamFence(table, request_id, 1, dynamodb, aws, 0, flushes=groups),
    )
