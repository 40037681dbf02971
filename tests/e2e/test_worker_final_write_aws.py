"""A decoded job nobody follows: its stream's last flush and its result stored in one
transaction, against a real moto server and the template's resources. The transaction goes
through whole or not at all: a subscriber who came meanwhile, or a lost lease, leaves nothing
of it stored, and the ordinary writes then take over."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.core.aws_calls import call_aws_async
from headrace.core.contracts import CompletionOutput, CompletionRequest, JobMessage, JobStatus
from headrace.core.settings import Settings
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from infra.provision import ProvisionedResources
from tests.e2e.worker_aws_support import CountingAws, chunk, fresh_resources, run
from worker.lifecycle import JobLifecycle, Stored, StreamTail
from worker.stream_store import StreamFence

OUTPUT = CompletionOutput(text="t0t1", num_prompt_tokens=1, num_completion_tokens=2)


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "f") as provisioned:
        yield provisioned


def job_message() -> JobMessage:
    return JobMessage(
        request_id=str(uuid.uuid4()),
        owner="o",
        model="m",
        request=CompletionRequest(prompt="x", max_new_tokens=2),
        submitted_at=time.time(),
    )


class Worker:
    """One worker's lifecycle and the fence of the job it claimed."""

    def __init__(self, worker_id: str, resources: ProvisionedResources, dynamodb: Any) -> None:
        settings = Settings(table_name=resources.table_name, visibility_timeout_seconds=30)
        self.aws = CountingAws()
        self.lifecycle = JobLifecycle(
            settings, dynamodb=dynamodb, worker_id=worker_id, clock=time.time, aws=self.aws
        )
        self.table = resources.table_name
        self.dynamodb = dynamodb

    async def claim(self, job: JobMessage) -> tuple[job_table.JobRecord, StreamFence]:
        record = await self.lifecycle.claim(job)
        assert isinstance(record, job_table.JobRecord)
        fence = StreamFence(
            table=self.table,
            request_id=job.request_id,
            epoch=record.epoch,
            dynamodb=self.dynamodb,
            aws=call_aws_async,
            expires_at=0,
        )
        return record, fence

    async def finish(
        self, record: job_table.JobRecord, fence: StreamFence, seen: int = 0
    ) -> Stored | None:
        """The job's first flush committed the ordinary way, its last with the result."""
        await fence.commit([chunk(self.table, record.request_id, 0)])
        actions = fence.last_flush([chunk(self.table, record.request_id, 1)])
        assert actions is not None
        self.aws.calls.clear()
        tail = StreamTail(actions, subscriptions=seen)
        return await self.lifecycle.finish_with_stream(record, OUTPUT, None, tail)


async def stored(dynamodb: Any, table: str, request_id: str) -> tuple[str, int | None, list[int]]:
    """(job status, the stream head's next seq, seqs of the chunk items)."""
    job = await dynamodb.get_item(**job_table.get_job(table, request_id))
    head = await dynamodb.get_item(**stream_table.get_stream_head(table, request_id))
    chunks = await dynamodb.query(**stream_table.query_chunks(table, request_id))
    return (
        job_table.JobRecord.from_item(job["Item"]).status.value,
        stream_table.StreamHead.from_item(head["Item"]).next_seq if "Item" in head else None,
        [stream_table.chunk_seq(i) for i in chunks["Items"]],
    )


def test_the_last_flush_and_the_result_are_one_call(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, dict[str, int], Any]:
        worker = Worker("w1", resources, dynamodb)
        record, fence = await worker.claim(job)
        result = await worker.finish(record, fence)
        return result, worker.aws.calls, await stored(dynamodb, worker.table, job.request_id)

    result, calls, found = run(moto_endpoint, body)
    assert result == Stored(subscriptions=0)
    assert calls == {"transact_write_items": 1}
    # The job is final with the head past the last flush and its chunk item stored (the first
    # flush's item is the chunk writer's, not the fence's).
    assert found == (JobStatus.SUCCEEDED.value, 2, [1])


def test_a_subscriber_who_came_meanwhile_leaves_it_unstored_for_the_ordinary_writes(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, Any, Stored | None, Any]:
        worker = Worker("w1", resources, dynamodb)
        record, fence = await worker.claim(job)
        await dynamodb.transact_write_items(
            **connection_table.add_subscription(
                worker.table,
                request_id=job.request_id,
                connection_id="c1",
                endpoint="https://example.invalid",
                from_seq=0,
                now=time.time(),
            )
        )
        result = await worker.finish(record, fence)
        before = await stored(dynamodb, worker.table, job.request_id)
        # What the consumer does then: the flush on its own, then the result, which tells the
        # worker of the subscriber so that it delivers to it.
        await fence.commit([chunk(worker.table, job.request_id, 1)])
        ordinary = await worker.lifecycle.succeed(record, OUTPUT)
        return result, before, ordinary, await stored(dynamodb, worker.table, job.request_id)

    result, before, ordinary, after = run(moto_endpoint, body)
    assert result is None
    assert before == (JobStatus.RUNNING.value, 1, [])
    # 1, or None ("look", which moto gives: it leaves an unchanged attribute out of
    # UPDATED_NEW): either way the worker attaches the subscriber (StreamPublisher.sweep).
    assert ordinary is not None and ordinary.subscriptions in (1, None)
    assert after == (JobStatus.SUCCEEDED.value, 2, [])


def test_a_lost_lease_stores_nothing_of_it(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, Any]:
        lost, owner = Worker("w1", resources, dynamodb), Worker("w2", resources, dynamodb)
        await lost.lifecycle.renew_lease(time.time() - 1)  # w1's lease lapsed
        record, fence = await lost.claim(job)
        await owner.claim(job)  # w2 takes the job over, in a later epoch
        result = await lost.finish(record, fence)
        return result, await stored(dynamodb, lost.table, job.request_id)

    result, found = run(moto_endpoint, body)
    assert result is None
    assert found == (JobStatus.RUNNING.value, 1, [])
