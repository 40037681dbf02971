"""Priority lanes over the wire: two queues read as one by a worker, interactive work first,
and through the whole stack a batch backlog that an interactive job passes."""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.provision import ProvisionedResources
from tests.e2e.support import Api
from tests.e2e.worker_aws_support import fresh_resources, run
from worker.job_queue import JobQueue
from worker.lanes import Lane, LaneQueues


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "p") as provisioned:
        yield provisioned


async def lanes_of(sqs: Any, resources: ProvisionedResources, share: float) -> LaneQueues:
    return LaneQueues(
        JobQueue(sqs=sqs, queue_url=resources.queue_url),
        JobQueue(sqs=sqs, queue_url=resources.batch_queue_url),
        batch_share=share,
    )


async def send(sqs: Any, url: str, prefix: str, count: int) -> None:
    for i in range(count):
        await sqs.send_message(QueueUrl=url, MessageBody=f"{prefix}{i}")


async def depth(sqs: Any, url: str) -> int:
    attributes = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return sum(int(v) for v in attributes["Attributes"].values())


def test_interactive_messages_come_first_and_batch_ones_fill_the_room(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    async def body(dynamodb: Any, sqs: Any) -> tuple[list[str], list[Lane], int, int]:
        lanes = await lanes_of(sqs, resources, share=0.0)
        assert lanes.batch is not None
        await send(sqs, lanes.batch.queue_url, "b", 10)
        await send(sqs, lanes.interactive.queue_url, "i", 3)
        taken = await lanes.receive(max_messages=8, wait_seconds=1)
        receipts = [m["ReceiptHandle"] for m in taken]
        kinds = [lanes.lane_of(r) for r in receipts]
        # Every later call on a receipt reaches the queue it came from.
        assert await lanes.extend_visibility(receipts, 30) == {}
        for receipt in receipts:
            await lanes.delete(receipt)
        left = (
            await depth(sqs, lanes.interactive.queue_url),
            await depth(sqs, lanes.batch.queue_url),
        )
        return [m["Body"] for m in taken], kinds, *left

    bodies, kinds, interactive_left, batch_left = run(moto_endpoint, body)
    assert sorted(bodies[:3]) == ["i0", "i1", "i2"]
    assert all(b.startswith("b") for b in bodies[3:]) and len(bodies) == 8
    assert kinds == [Lane.INTERACTIVE] * 3 + [Lane.BATCH] * 5
    assert (interactive_left, batch_left) == (0, 5)


def test_batch_work_gets_its_share_while_interactive_work_waits(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    async def body(dynamodb: Any, sqs: Any) -> list[str]:
        lanes = await lanes_of(sqs, resources, share=0.25)
        assert lanes.batch is not None
        await send(sqs, lanes.batch.queue_url, "b", 20)
        await send(sqs, lanes.interactive.queue_url, "i", 40)
        bodies: list[str] = []
        while len(bodies) < 40:  # a worker with room for 4 at a time
            for message in await lanes.receive(max_messages=4, wait_seconds=0):
                bodies.append(message["Body"])
                await lanes.delete(message["ReceiptHandle"])
        return bodies

    bodies = run(moto_endpoint, body)
    batch_taken = sum(b.startswith("b") for b in bodies)
    # A quarter of what it took, give or take the first receive (nothing owed yet).
    assert 0.2 * len(bodies) <= batch_taken <= 0.3 * len(bodies), bodies


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def test_an_interactive_job_passes_a_batch_backlog(api: Api) -> None:
    # It comes once the worker is busy with the backlog, with a prompt too long to share a
    # batch with the backlog's and less work than any batch of them: a planner blind to lanes
    # (most work first) would start it only after every batch job it holds.
    backlog_job = {"prompt": "The mill", "max_new_tokens": 400, "temperature": 0}
    backlog = [api.submit({**backlog_job, "priority": "batch"}) for _ in range(60)]
    _wait_until_one_runs(api, backlog)  # the worker holds the backlog and decodes some of it
    urgent = api.submit({"prompt": "water " * 150, "max_new_tokens": 10, "temperature": 0})
    urgent_done = _at(api.wait(urgent)["finished_at"])
    batch_jobs = [api.wait(r, timeout=120) for r in backlog]
    assert all(job["status"] == "SUCCEEDED" for job in batch_jobs)
    later = sum(_at(job["finished_at"]) > urgent_done for job in batch_jobs)
    # Before it: the batches running when it came, and at most those of a replica that freed
    # while it was being claimed (2 replicas of 8 each); a planner blind to lanes: all 60.
    assert later >= 16, f"only {later} of 60 batch jobs finished after the interactive one"


def _wait_until_one_runs(api: Api, jobs: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for request_id in itertools.cycle(jobs):
        if api.call("GET", f"/v1/llm/completions/{request_id}")[1]["status"] != "QUEUED":
            return
        assert time.monotonic() < deadline, "no backlog job started"


def test_a_batch_priority_that_is_not_a_lane_is_a_400_naming_the_field(api: Api) -> None:
    status, answer = api.call(
        "POST",
        "/v1/llm/completions-async",
        {"prompt": "x", "priority": "urgent"},
    )
    assert status == 400, answer
    assert answer["detail"].startswith("priority:")
