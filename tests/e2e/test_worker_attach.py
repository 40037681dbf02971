"""How a worker attaches the followers of the jobs it starts, against a real moto server: the
connection that submitted a job is known from its record, and the followers of a batch's jobs
are attached in shared transactions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from infra.provision import ProvisionedResources
from tests.e2e.worker_aws_support import (
    CountingAws,
    fresh_resources,
    job_with_followers,
    new_job,
    publisher_of,
    run,
)
from worker.publisher import StreamPublisher
from worker.transactions import TransactionGroups


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "w") as provisioned:
        yield provisioned


async def submitted_over_a_socket(
    dynamodb: Any, table: str, request_id: str, connection_id: str
) -> job_table.JobRecord:
    """A job as the WebSocket `complete` route records it, read back as a worker's claim would."""
    await dynamodb.transact_write_items(
        **connection_table.new_job_followed(
            new_job(table, request_id),
            request_id=request_id,
            connection_id=connection_id,
            endpoint="https://example.invalid",
            now=time.time(),
        )
    )
    item = await dynamodb.get_item(TableName=table, Key=job_table.job_key(request_id))
    return job_table.JobRecord.from_item(item["Item"])


async def claimed(
    dynamodb: Any, table: str, record: job_table.JobRecord
) -> tuple[StreamPublisher, CountingAws]:
    """The job's publisher once its followers are attached, as a worker's first claim of it
    has them, and the AWS calls it made."""
    aws = CountingAws()
    groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
    publisher = publisher_of(record.request_id, table, dynamodb, aws, groups)
    publisher.subscriptions_seen(record.subscriptions)
    assert record.first_follower is not None
    publisher.expect_first_follower(*record.first_follower)
    await publisher.catch_up()
    return publisher, aws


def test_the_connection_that_submitted_a_job_is_attached_without_a_query(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    request_id = str(uuid.uuid4())

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, dict[str, int], list[str], str | None]:
        record = await submitted_over_a_socket(dynamodb, table, request_id, "c1")
        publisher, aws = await claimed(dynamodb, table, record)
        answer = await dynamodb.query(**stream_table.query_subscriptions(table, request_id))
        [subscription] = map(stream_table.Subscription.from_item, answer["Items"])
        return (
            record.first_follower,
            aws.calls,
            list(publisher._followers),
            subscription.attached_by,
        )

    first_follower, calls, followers, attached_by = run(moto_endpoint, body)
    assert first_follower == ("c1", "https://example.invalid")
    assert calls == {"transact_write_items": 1}  # the attach; no query
    assert followers == ["c1"]
    assert attached_by == "w#1"


def test_a_first_follower_gone_before_the_start_sends_the_worker_to_the_subscriptions(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    """Its connection closed before the job started (its subscription deleted, the record's
    count unchanged): the attach fails, and the worker queries the subscriptions, which hold
    nobody to follow."""
    table = resources.table_name
    request_id = str(uuid.uuid4())

    async def body(dynamodb: Any, sqs: Any) -> tuple[dict[str, int], list[str]]:
        record = await submitted_over_a_socket(dynamodb, table, request_id, "c1")
        await dynamodb.transact_write_items(
            **connection_table.delete_subscription(table, request_id=request_id, connection_id="c1")
        )
        publisher, aws = await claimed(dynamodb, table, record)
        return aws.calls, list(publisher._followers)

    calls, followers = run(moto_endpoint, body)
    assert followers == []
    assert calls["query"] == 1


def test_the_followers_of_a_batchs_jobs_are_attached_together(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    """The jobs of a batch attach their followers as it starts: in shared transactions, not an
    UpdateItem each; a subscription a handler is replaying to stays the handler's, and a worker
    that attaches again what is already its own (its first answer lost) keeps it."""
    table = resources.table_name
    jobs: dict[str, tuple[str, ...]] = {
        str(uuid.uuid4()): ("a", "b"),
        str(uuid.uuid4()): ("c", "d"),
    }
    replayed = str(uuid.uuid4())
    jobs[replayed] = ("e", "f", "g")

    async def body(dynamodb: Any, sqs: Any) -> tuple[dict[str, int], dict[str, str], bool]:
        for request_id, connections in jobs.items():
            await job_with_followers(dynamodb, table, request_id, connections)
        await dynamodb.update_item(
            **stream_table.attach_subscription(
                table,
                request_id=replayed,
                connection_id="g",
                attacher=stream_table.HANDLER_ATTACHMENT,
            )
        )
        aws = CountingAws()
        groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
        publishers = [publisher_of(r, table, dynamodb, aws, groups) for r in jobs]
        await asyncio.gather(*(p.catch_up() for p in publishers))
        attached: dict[str, str] = {}
        for request_id in jobs:
            answer = await dynamodb.query(**stream_table.query_subscriptions(table, request_id))
            for subscription in map(stream_table.Subscription.from_item, answer["Items"]):
                attached[subscription.connection_id] = str(subscription.attached_by)
        again = await publishers[0]._attach("a")
        return aws.calls, attached, again

    calls, attached, again = run(moto_endpoint, body)
    assert attached == {
        **dict.fromkeys("abcdef", "w#1"),
        "g": stream_table.HANDLER_ATTACHMENT,
    }
    # One query a job, and the attaches in transactions shared with whatever else the worker
    # writes at that moment (usually one or two a job; more only if the loop's turns split
    # them), where an UpdateItem each made seven calls. The handler's subscription fails its
    # group, which goes again without it, and is tried alone once.
    assert calls["query"] == 3
    assert calls.get("update_item", 0) <= 1
    assert 1 <= calls["transact_write_items"] <= 7
    assert again is True
