"""A worker's leases against a real moto server and the template's resources: the heartbeat (one
DynamoDB write whatever the jobs held; its cost measured), claims that find a job leased to a
live worker, lost, or out of attempts, and the fence on a job's stream."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.core.aws_calls import call_aws_async
from headrace.core.contracts import CompletionOutput, CompletionRequest, JobMessage
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.core.tables import leases as lease_table
from headrace.core.tables import streams as stream_table
from infra.provision import ProvisionedResources
from tests.e2e.worker_aws_support import CountingAws, chunk, fresh_resources, run
from worker.job_queue import JobQueue
from worker.leases import Leases
from worker.lifecycle import JobLifecycle, LeaseLost, NotClaimed, ToEnd
from worker.stream_store import StreamFence

REQUEST = CompletionRequest(prompt="x", max_new_tokens=4)


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "l") as provisioned:
        yield provisioned


def settings_for(resources: ProvisionedResources, **fields: Any) -> Settings:
    return Settings(table_name=resources.table_name, visibility_timeout_seconds=30, **fields)


def lifecycle_of(
    worker_id: str, settings: Settings, dynamodb: Any, aws: Any = call_aws_async
) -> JobLifecycle:
    return JobLifecycle(settings, dynamodb=dynamodb, worker_id=worker_id, clock=time.time, aws=aws)


def job_message(request_id: str | None = None) -> JobMessage:
    return JobMessage(
        request_id=request_id or str(uuid.uuid4()),
        owner="o",
        model="m",
        request=REQUEST,
        submitted_at=time.time(),
    )


async def received(sqs: Any, url: str, count: int) -> list[dict[str, Any]]:
    for i in range(count):
        await sqs.send_message(QueueUrl=url, MessageBody=str(i))
    messages: list[dict[str, Any]] = []
    while len(messages) < count:
        answer = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=2
        )
        messages += answer.get("Messages", [])
    return messages


def test_one_heartbeat_renews_the_worker_lease_and_extends_every_held_message(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)

    async def body(dynamodb: Any, sqs: Any) -> tuple[CountingAws, float, int]:
        messages = await received(sqs, resources.queue_url, 12)
        aws = CountingAws()
        w1 = lifecycle_of("w1", settings, dynamodb, aws)
        leases = Leases(
            JobQueue(sqs=sqs, queue_url=resources.queue_url, aws=aws),
            w1,
            visibility_timeout=settings.visibility_timeout_seconds,
            clock=time.time,
        )
        for message in messages:
            record = await w1.claim(job_message())
            assert isinstance(record, job_table.JobRecord)
            leases.hold(message["ReceiptHandle"], record, lapses_at=time.time() + 2)
        aws.calls.clear()
        beat = await leases.beat()
        calls = CountingAws()
        calls.calls = dict(aws.calls)
        await asyncio.sleep(2.5)  # past the visibility they were received with
        again = await sqs.receive_message(
            QueueUrl=resources.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        assert beat.renewed and beat.extended == 12
        return calls, await w1.lease_of("w1") - time.time(), len(again.get("Messages", []))

    aws, lease_left, visible_again = run(moto_endpoint, body)
    assert visible_again == 0
    assert 25 < lease_left <= 30
    # Every job's lease is the worker's: one write, however many jobs it holds.
    assert aws.calls == {"put_item": 1, "change_message_visibility_batch": 2}


def test_a_heartbeats_cost_does_not_grow_with_the_jobs_held(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    """The renewal cost, measured: one DynamoDB write whatever the number of jobs, the SQS
    calls (ten messages each) at once. Printed per size (`pytest -s` shows it)."""
    settings = settings_for(resources)
    sizes = (1, 10, 100)

    async def body(dynamodb: Any, sqs: Any) -> dict[int, tuple[dict[str, int], float]]:
        w1 = lifecycle_of("w1", settings, dynamodb)
        record = await w1.claim(job_message())
        assert isinstance(record, job_table.JobRecord)
        results = {}
        for size in sizes:
            messages = await received(sqs, resources.queue_url, size)
            aws = CountingAws()
            leases = Leases(
                JobQueue(sqs=sqs, queue_url=resources.queue_url, aws=aws),
                lifecycle_of("w1", settings, dynamodb, aws),
                visibility_timeout=settings.visibility_timeout_seconds,
                clock=time.time,
            )
            timings = []
            for _ in range(3):
                for message in messages:  # all of them due
                    leases.hold(message["ReceiptHandle"], record, lapses_at=time.time())
                timings.append((await leases.beat()).seconds)
            results[size] = (
                {name: count // 3 for name, count in aws.calls.items()},
                sorted(timings)[1],
            )
            for message in messages:
                await sqs.delete_message(
                    QueueUrl=resources.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return results

    results = run(moto_endpoint, body)
    for size, (calls, seconds) in results.items():
        print(f"heartbeat with {size} held jobs: {calls}, median {seconds * 1000:.1f} ms")
        assert calls == {"put_item": 1, "change_message_visibility_batch": math.ceil(size / 10)}


def test_a_message_received_within_the_last_half_beat_waits_for_the_next(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)
    clock = [time.time()]

    async def body(dynamodb: Any, sqs: Any) -> tuple[dict[str, int], dict[str, int]]:
        (message,) = await received(sqs, resources.queue_url, 1)
        aws = CountingAws()
        w1 = lifecycle_of("w1", settings, dynamodb, aws)
        leases = Leases(
            JobQueue(sqs=sqs, queue_url=resources.queue_url, aws=aws),
            w1,
            visibility_timeout=settings.visibility_timeout_seconds,
            clock=lambda: clock[0],
        )
        record = await w1.claim(job_message())
        assert isinstance(record, job_table.JobRecord)
        leases.hold(message["ReceiptHandle"], record, lapses_at=clock[0] + 30)
        aws.calls.clear()
        await leases.beat()  # just received: nothing to extend
        first = dict(aws.calls)
        clock[0] += leases.beat_seconds  # a beat later: extended
        await leases.beat()
        return first, dict(aws.calls)

    first, second = run(moto_endpoint, body)
    assert first == {"put_item": 1}
    assert second == {"put_item": 2, "change_message_visibility_batch": 1}


def test_a_receive_of_a_job_leased_to_a_live_worker_spends_no_attempt(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> tuple[list[Any], job_table.JobRecord | None]:
        w1, w2 = (lifecycle_of(w, settings, dynamodb) for w in ("w1", "w2"))
        await w1.renew_lease(time.time() + 30)
        assert isinstance(await w1.claim(job), job_table.JobRecord)
        claims = [await w2.claim(job) for _ in range(5)]
        return claims, await w2.read(job.request_id)

    claims, record = run(moto_endpoint, body)
    assert all(isinstance(c, NotClaimed) and c.retry_in and 30 <= c.retry_in <= 32 for c in claims)
    assert record is not None and (record.attempts, record.epoch, record.lease_owner) == (
        1,
        1,
        "w1",
    )


def test_a_job_of_a_lost_worker_is_taken_over_and_the_lost_one_can_write_nothing(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)
    job = job_message()
    output = CompletionOutput(text="t", num_prompt_tokens=1, num_completion_tokens=1)

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, Any, Any, Any]:
        w1, w2 = (lifecycle_of(w, settings, dynamodb) for w in ("w1", "w2"))
        await w1.renew_lease(time.time() - 1)  # w1's lease lapsed
        first = await w1.claim(job)
        assert isinstance(first, job_table.JobRecord)
        second = await w2.claim(job)
        assert isinstance(second, job_table.JobRecord)
        lost = (await w1.succeed(first, output), await w1.release(first))
        return first, second, lost, await w2.succeed(second, output)

    first, second, lost, stored = run(moto_endpoint, body)
    assert (first.attempts, first.epoch) == (1, 1)
    assert (second.attempts, second.epoch, second.lease_owner) == (2, 2, "w2")
    assert lost == (None, False)
    assert stored is not None


def test_a_job_out_of_attempts_is_leased_only_to_end_it(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources, max_attempts=2)
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> Any:
        workers = [lifecycle_of(w, settings, dynamodb) for w in ("w1", "w2", "w3")]
        return [await w.claim(job) for w in workers]  # none of them has a lease

    first, second, third = run(moto_endpoint, body)
    assert isinstance(first, job_table.JobRecord) and first.attempts == 1
    assert isinstance(second, job_table.JobRecord) and second.attempts == 2
    assert isinstance(third, ToEnd)
    assert third.reason == "gave up after 2 attempts: worker lost"
    assert (third.record.attempts, third.record.epoch, third.record.lease_owner) == (2, 3, "w3")


def test_a_later_epoch_fences_the_stream_of_an_earlier_one(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table = resources.table_name
    request_id = str(uuid.uuid4())

    async def body(dynamodb: Any, sqs: Any) -> tuple[stream_table.StreamHead, list[int]]:
        def fence(epoch: int) -> StreamFence:
            return StreamFence(
                table=table,
                request_id=request_id,
                epoch=epoch,
                dynamodb=dynamodb,
                aws=call_aws_async,
                expires_at=0,
            )

        first = fence(1)
        await first.commit([chunk(table, request_id, 0), chunk(table, request_id, 1)])
        second = fence(2)
        head = await second.open()
        with pytest.raises(LeaseLost):
            await first.commit([chunk(table, request_id, 2)])
        with pytest.raises(LeaseLost):
            await fence(1).open()
        await second.commit([chunk(table, request_id, 2)])
        # A commit retried after its first try went through stands.
        second.committed = 2
        await second.commit([chunk(table, request_id, 2)])
        found = await dynamodb.get_item(**stream_table.get_stream_head(table, request_id))
        after = stream_table.StreamHead.from_item(found["Item"])
        return head, [after.epoch, after.next_seq]

    head, after = run(moto_endpoint, body)
    assert (head.epoch, head.next_seq) == (2, 2)
    assert [stream_table.chunk_seq(i) for i in head.tail] == [0, 1]
    assert after == [2, 3]


def test_the_worker_lease_record_says_until_when_a_worker_is_alive(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)

    async def body(dynamodb: Any, sqs: Any) -> tuple[float, float, float]:
        w1 = lifecycle_of("w1", settings, dynamodb)
        before = await w1.lease_of("w1")
        await w1.renew_lease(1234.5)
        renewed = await w1.lease_of("w1")
        await w1.end_lease()
        return before, renewed, await w1.lease_of("w1")

    assert run(moto_endpoint, body) == (0.0, 1234.5, 0.0)
    assert lease_table.alive_until(None) == 0.0


def test_a_hand_back_at_shutdown_does_not_count_as_an_attempt(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    settings = settings_for(resources)
    job = job_message()

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, Any]:
        w1, w2 = (lifecycle_of(w, settings, dynamodb) for w in ("w1", "w2"))
        first = await w1.claim(job)
        assert isinstance(first, job_table.JobRecord)
        assert await w1.release(first, refund=True)
        return await w1.read(job.request_id), await w2.claim(job)

    released, second = run(moto_endpoint, body)
    assert (released.status.value, released.attempts, released.epoch) == ("QUEUED", 0, 1)
    assert isinstance(second, job_table.JobRecord)
    assert (second.attempts, second.epoch) == (1, 2)
