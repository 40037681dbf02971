"""The worker's pooled AWS traffic, against a real moto server and the template's resources:
the shared chunk writer, the subscriber watch, and the batched heartbeat."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aioboto3
import boto3
import pytest

from headrace.core.aws_calls import call_aws_async
from headrace.core.contracts import CompletionRequest, StreamEvent, StreamOutput
from headrace.core.errors import ConditionFailed, NotFound
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.moto import MOTO_CREDENTIALS
from infra.provision import AwsClients, ProvisionedResources, provision
from worker.job_queue import JobQueue
from worker.leases import Leases
from worker.lifecycle import JobLifecycle
from worker.stream_store import ChunkWriter, SubscriberWatch

T = TypeVar("T")
REQUEST = CompletionRequest(prompt="x", max_new_tokens=4)


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    clients = AwsClients.create(moto_endpoint, session=session)
    try:
        yield provision(clients, stack_name=f"w{uuid.uuid4().hex[:10]}")
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


def test_chunks_of_many_streams_share_batch_writes(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    ids = [str(uuid.uuid4()) for _ in range(30)]

    async def body(dynamodb: Any, sqs: Any) -> tuple[CountingAws, list[int]]:
        aws = CountingAws()
        writer = ChunkWriter(table=table, dynamodb=dynamodb, aws=aws)
        # 30 streams flush at the same moment, two chunks each, as on a shared flush clock.
        await asyncio.gather(*(writer.put([chunk(table, r, 0), chunk(table, r, 1)]) for r in ids))
        stored = []
        for request_id in ids:
            answer = await dynamodb.query(**stream_table.query_chunks(table, request_id))
            stored.append(len(answer["Items"]))
        return aws, stored

    aws, stored = run(moto_endpoint, body)
    assert stored == [2] * 30  # every chunk was stored before its put returned
    assert aws.calls == {"batch_write_item": 3}  # 60 items, 25 a call


def test_a_failed_write_fails_the_puts_it_carried(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    async def body(dynamodb: Any, sqs: Any) -> None:
        writer = ChunkWriter(table="no-such-table", dynamodb=dynamodb, aws=call_aws_async)
        with pytest.raises(NotFound):
            await writer.put([chunk("no-such-table", str(uuid.uuid4()), 0)])

    run(moto_endpoint, body)


class Follower:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.seen: list[int] = []

    def subscriptions_seen(self, count: int) -> None:
        self.seen.append(count)


def test_the_watch_reads_every_running_jobs_subscriptions_in_one_call(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    ids = [str(uuid.uuid4()) for _ in range(3)]

    async def body(dynamodb: Any, sqs: Any) -> tuple[CountingAws, list[list[int]]]:
        for request_id in ids:
            await dynamodb.put_item(
                **job_table.put_new_job(
                    table,
                    request_id=request_id,
                    owner="o",
                    model="m",
                    request=REQUEST,
                    now=time.time(),
                    ttl_seconds=60,
                )
            )
        # Two connections follow the second job, as the WebSocket handler records them.
        for connection in ("c1", "c2"):
            await dynamodb.transact_write_items(
                **stream_table.add_subscription(
                    table,
                    request_id=ids[1],
                    connection_id=connection,
                    endpoint="http://x",
                    from_seq=0,
                    now=time.time(),
                )
            )
        aws = CountingAws()
        watch = SubscriberWatch(table=table, dynamodb=dynamodb, aws=aws, interval=1.0)
        followers = [Follower(r) for r in ids]
        for follower in followers:
            watch.add(follower)
        watch.remove(followers[2])
        await watch.check()
        return aws, [f.seen for f in followers]

    aws, seen = run(moto_endpoint, body)
    assert seen == [[0], [2], []]
    assert aws.calls == {"batch_get_item": 1}


def test_a_subscription_to_a_missing_job_is_refused(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    async def body(dynamodb: Any, sqs: Any) -> None:
        request = stream_table.add_subscription(
            resources.table_name,
            request_id=str(uuid.uuid4()),
            connection_id="c",
            endpoint="http://x",
            from_seq=0,
            now=time.time(),
        )
        with pytest.raises(ConditionFailed):
            await call_aws_async(dynamodb.transact_write_items, **request)

    run(moto_endpoint, body)


async def claimed(dynamodb: Any, table: str, *, now: float, lease_seconds: float) -> str:
    """A new job, claimed by worker w1 with a lease of `lease_seconds`: its request id."""
    request_id = str(uuid.uuid4())
    await dynamodb.update_item(
        **job_table.claim_job(
            table,
            request_id=request_id,
            owner="o",
            model="m",
            request=REQUEST,
            worker_id="w1",
            now=now,
            lease_seconds=lease_seconds,
            ttl_seconds=60,
        )
    )
    return request_id


def heartbeat_of_w1(
    settings: Settings,
    sqs: Any,
    dynamodb: Any,
    queue_url: str,
    *,
    clock: Callable[[], float],
    aws: CountingAws,
) -> Leases:
    """The heartbeat of worker w1, its AWS calls counted."""
    return Leases(
        JobQueue(sqs=sqs, queue_url=queue_url, aws=aws),
        JobLifecycle(settings, dynamodb=dynamodb, worker_id="w1", clock=clock, aws=aws),
        visibility_timeout=settings.visibility_timeout_seconds,
        clock=clock,
    )


def test_one_heartbeat_extends_every_held_message_and_lease_about_to_lapse(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = Settings(table_name=resources.table_name, visibility_timeout_seconds=30)

    async def body(dynamodb: Any, sqs: Any) -> tuple[CountingAws, list[float], int]:
        url = resources.queue_url
        for i in range(12):
            await sqs.send_message(QueueUrl=url, MessageBody=str(i))
        messages: list[dict[str, Any]] = []
        while len(messages) < 12:
            answer = await sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=2
            )
            messages += answer.get("Messages", [])
        now = time.time()
        aws = CountingAws()
        leases = heartbeat_of_w1(settings, sqs, dynamodb, url, clock=time.time, aws=aws)
        for message in messages:
            request_id = await claimed(dynamodb, settings.table_name, now=now, lease_seconds=2)
            leases.hold(message["ReceiptHandle"], request_id, lapses_at=now + 2)
        await leases.extend()
        await asyncio.sleep(2.5)  # past the visibility and lease they were received with
        again = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        expiries = []
        for held in list(leases._held.values()):
            item = await dynamodb.get_item(
                **job_table.get_job(settings.table_name, held.request_id)
            )
            expiries.append(float(item["Item"]["lease_expires_at"]["N"]) - now)
        return aws, expiries, len(again.get("Messages", []))

    aws, expiries, visible_again = run(moto_endpoint, body)
    assert visible_again == 0
    assert len(expiries) == 12 and all(e > 25 for e in expiries)
    assert aws.calls == {"change_message_visibility_batch": 2, "update_item": 12}


def test_a_heartbeat_leaves_what_has_two_beats_ahead_and_extends_it_at_the_next(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = Settings(table_name=resources.table_name, visibility_timeout_seconds=30)
    clock = [time.time()]

    async def body(dynamodb: Any, sqs: Any) -> tuple[dict[str, int], dict[str, int]]:
        url = resources.queue_url
        await sqs.send_message(QueueUrl=url, MessageBody="fresh")
        answer = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)
        (message,) = answer["Messages"]
        request_id = await claimed(dynamodb, settings.table_name, now=clock[0], lease_seconds=30)
        aws = CountingAws()
        leases = heartbeat_of_w1(settings, sqs, dynamodb, url, clock=lambda: clock[0], aws=aws)
        leases.hold(message["ReceiptHandle"], request_id, lapses_at=clock[0] + 30)
        await leases.extend()  # 30 s ahead: more than two beats of 10 s
        first = dict(aws.calls)
        clock[0] += leases.beat_seconds + 0.1  # the next beat: 19.9 s ahead
        await leases.extend()
        return first, dict(aws.calls)

    first, second = run(moto_endpoint, body)
    assert first == {}
    assert second == {"change_message_visibility_batch": 1, "update_item": 1}
