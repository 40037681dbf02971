"""The worker's pooled AWS traffic, against a real moto server and the template's resources:
the shared chunk writer, the flushes of many streams in one transaction, and the subscriber
watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.core.aws_calls import call_aws_async
from headrace.core.errors import ConditionFailed, NotFound
from headrace.core.tables import connections as connection_table
from headrace.core.tables import streams as stream_table
from infra.provision import ProvisionedResources
from tests.e2e.worker_aws_support import (
    CountingAws,
    chunk,
    fresh_resources,
    job_with_followers,
    publisher_of,
    run,
)
from tests.unit.test_stream_interval import Decoding
from worker.lifecycle import LeaseLost
from worker.progress import ProgressSignal, Watch
from worker.stream_store import ChunkWriter, StreamFence, SubscriberWatch
from worker.transactions import TransactionGroups


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "w") as provisioned:
        yield provisioned


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


def test_flushes_of_many_streams_share_transactions_and_a_fenced_out_one_fails_alone(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    ids = [str(uuid.uuid4()) for _ in range(30)]

    async def body(
        dynamodb: Any, sqs: Any
    ) -> tuple[dict[str, int], list[Any], list[tuple[int, int, int]]]:
        aws = CountingAws()
        writer = ChunkWriter(table=table, dynamodb=dynamodb, aws=aws)
        groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
        fences = [
            StreamFence(table, r, 1, dynamodb, aws, expires_at=0, flushes=groups) for r in ids
        ]
        # 30 streams flush at the same moment, on the shared clock: two chunks each.
        await asyncio.gather(
            *(
                f.store([chunk(table, f.request_id, 0), chunk(table, f.request_id, 1)], writer)
                for f in fences
            )
        )
        calls = dict(aws.calls)
        # A later attempt takes the first stream over; its old writer's next flush, made with
        # the others', is refused alone.
        await dynamodb.update_item(
            **stream_table.open_stream_head(table, request_id=ids[0], epoch=2, expires_at=0)
        )
        outcomes = await asyncio.gather(
            *(f.store([chunk(table, f.request_id, 2)], writer) for f in fences),
            return_exceptions=True,
        )
        heads = []
        for request_id in ids:
            head = await dynamodb.get_item(**stream_table.get_stream_head(table, request_id))
            answer = await dynamodb.query(**stream_table.query_chunks(table, request_id))
            stored_head = stream_table.StreamHead.from_item(head["Item"])
            heads.append((stored_head.next_seq, len(answer["Items"]), len(stored_head.tail)))
        return calls, outcomes, heads

    calls, outcomes, heads = run(moto_endpoint, body)
    # 90 actions: the first flush alone, then the others as one transaction or two.
    assert set(calls) == {"transact_write_items"} and calls["transact_write_items"] <= 3, calls
    assert isinstance(outcomes[0], LeaseLost) and outcomes[1:] == [True] * 29
    # Chunks stored in the commit's own transaction leave no tail on the head (the fenced-out
    # stream's head is the later epoch's, as it opened it).
    assert heads == [(2, 2, 0)] + [(3, 3, 0)] * 29


def test_delivery_notes_go_with_the_flush_and_one_whose_subscription_went_fails_alone(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    request_id = str(uuid.uuid4())

    async def body(dynamodb: Any, sqs: Any) -> tuple[list[Any], list[dict[str, int]], Any]:
        await job_with_followers(dynamodb, table, request_id, ("c1", "c2"))
        aws = CountingAws()
        writer = ChunkWriter(table=table, dynamodb=dynamodb, aws=aws)
        groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
        fence = StreamFence(table, request_id, 1, dynamodb, aws, expires_at=0, flushes=groups)

        def note(connection: str, seq: int) -> dict[str, Any]:
            return stream_table.record_delivered(
                table, request_id=request_id, connection_id=connection, seq=seq
            )

        stored, calls = [], []
        stored.append(await fence.store([chunk(table, request_id, 0)], writer, [note("c1", 0)]))
        calls.append(dict(aws.calls))
        aws.calls.clear()
        await dynamodb.transact_write_items(
            **connection_table.delete_subscription(table, request_id=request_id, connection_id="c2")
        )
        stored.append(await fence.store([chunk(table, request_id, 1)], writer, [note("c2", 0)]))
        calls.append(dict(aws.calls))
        subscriptions = await dynamodb.query(**stream_table.query_subscriptions(table, request_id))
        chunks = await dynamodb.query(**stream_table.query_chunks(table, request_id))
        found = (
            {
                s.connection_id: s.delivered_seq
                for s in map(stream_table.Subscription.from_item, subscriptions["Items"])
            },
            [stream_table.chunk_seq(i) for i in chunks["Items"]],
        )
        return stored, calls, found

    stored, calls, found = run(moto_endpoint, body)
    # The first flush carried its note: one call for both.
    assert stored[0] is True and calls[0] == {"transact_write_items": 1}
    # A note for a subscription gone meanwhile fails the transaction; the flush is stored the
    # ordinary way, and the note is not (nor is the subscription made again).
    assert stored[1] is False
    assert calls[1] == {"transact_write_items": 1, "update_item": 1, "batch_write_item": 1}
    assert found == ({"c1": 0}, [0, 1])


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
        # Two connections follow the second job.
        for request_id, connections in zip(ids, [(), ("c1", "c2"), ()], strict=True):
            await job_with_followers(dynamodb, table, request_id, connections)
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
        request = connection_table.add_subscription(
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


def test_who_followed_before_the_start_is_attached_before_the_first_token(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    """The connection that submitted the job is attached while the prefill runs: the first
    token goes out after its flush's commit alone, not after a query and an attach too."""
    table = resources.table_name
    request_id = str(uuid.uuid4())

    async def body(dynamodb: Any, sqs: Any) -> tuple[str | None, dict[str, int], list[int]]:
        await job_with_followers(dynamodb, table, request_id, ("c1",))
        aws = CountingAws()
        posted: list[int] = []
        first_post = asyncio.Event()

        async def post(endpoint: str, connection_id: str, data: bytes) -> bool:
            posted.append(json.loads(data)["seq"])
            first_post.set()
            return True

        groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
        publisher = publisher_of(request_id, table, dynamodb, aws, groups, post=post, attacher="w")
        publisher.subscriptions_seen(1)  # as the job record said at the claim
        decoding = Decoding()
        watch = Watch(ProgressSignal(asyncio.get_running_loop()), source=decoding)
        following = asyncio.create_task(publisher.follow(watch))
        watch.started.set()  # the batch started; no token yet
        attached_by = None
        for _ in range(100):
            await asyncio.sleep(0.02)
            answer = await dynamodb.query(**stream_table.query_subscriptions(table, request_id))
            [subscription] = map(stream_table.Subscription.from_item, answer["Items"])
            if (attached_by := subscription.attached_by) is not None:
                break
        aws.calls.clear()
        decoding.tokens = 1
        watch.signal.notify()
        await first_post.wait()
        first_token_calls = dict(aws.calls)
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        return attached_by, first_token_calls, posted

    attached_by, first_token_calls, posted = run(moto_endpoint, body)
    assert attached_by == "w"
    assert first_token_calls == {"transact_write_items": 1}  # the commit, with its chunk
    assert posted == [0]
