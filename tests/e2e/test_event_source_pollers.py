"""The dev stack's event source pollers against a real local endpoint: a DynamoDB stream is
read at Lambda's base rate (4 reads a second), and at once while reads come back full; an idle
queue is long-polled by one poller a mapping, a busy one by all of them."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from headrace.dev import event_sources
from headrace.dev.event_sources import STREAM_READ_INTERVAL_SECONDS, SqsPoller, StreamPoller
from infra.event_sources import EventSourceMapping


@dataclass
class CountedReads:
    """The real streams client, with when each GetRecords began and how many records it
    returned."""

    client: Any
    reads: list[tuple[float, int]] = field(default_factory=list)

    def get_records(self, **kwargs: Any) -> Any:
        started = time.monotonic()
        page = self.client.get_records(**kwargs)
        self.reads.append((started, len(page.get("Records", []))))
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _mapping(batch_size: int, source: str = "dynamodb", concurrency: int = 1) -> Any:
    return EventSourceMapping(
        logical_id="TestMapping",
        function_logical_id="TestFunction",
        handler="json.dumps",  # replaced below: the records are collected instead
        timeout_seconds=30,
        source=source,  # type: ignore[arg-type]
        source_logical_id="Source",
        batch_size=batch_size,
        batching_window_seconds=0,
        report_batch_item_failures=False,
        filters=(),
        max_concurrency=concurrency,
        starting_position="TRIM_HORIZON",
    )


def _table_with_stream(endpoint: str) -> tuple[Any, Any, str, str]:
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    streams = boto3.client("dynamodbstreams", endpoint_url=endpoint)
    table = f"poll-{uuid.uuid4().hex[:8]}"
    described = dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return dynamodb, streams, table, described["TableDescription"]["LatestStreamArn"]


def _poll(poller: StreamPoller, delivered: list[str], until: int, timeout: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while len(delivered) < until and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)


def _collecting(poller: StreamPoller, delivered: list[str]) -> None:
    def invoke(event: dict[str, Any]) -> None:
        delivered.extend(r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"])

    poller.invoke = invoke


def test_a_busy_stream_is_read_at_most_four_times_a_second(moto_endpoint: str) -> None:
    dynamodb, streams, table, arn = _table_with_stream(moto_endpoint)
    counted = CountedReads(streams)
    poller = StreamPoller(_mapping(batch_size=100), counted, arn)
    delivered: list[str] = []
    _collecting(poller, delivered)
    keys = [f"item-{i}" for i in range(30)]

    def write() -> None:  # a record every 50 ms for 1.5 s
        for key in keys:
            dynamodb.put_item(TableName=table, Item={"pk": {"S": key}})
            time.sleep(0.05)

    writer = threading.Thread(target=write)
    writer.start()
    _poll(poller, delivered, until=len(keys), timeout=30)
    writer.join()

    assert delivered == keys  # every record, in order, once
    starts = [started for started, _ in counted.reads]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps, counted.reads
    # Each read begins a full interval after the one before (none came back full).
    assert min(gaps) >= STREAM_READ_INTERVAL_SECONDS - 0.01, gaps


def test_a_backlog_is_read_without_waiting_between_full_pages(moto_endpoint: str) -> None:
    dynamodb, streams, table, arn = _table_with_stream(moto_endpoint)
    keys = [f"item-{i:02d}" for i in range(25)]
    for key in keys:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}})
    counted = CountedReads(streams)
    poller = StreamPoller(_mapping(batch_size=10), counted, arn)
    delivered: list[str] = []
    _collecting(poller, delivered)

    _poll(poller, delivered, until=len(keys), timeout=30)

    assert delivered == keys
    assert [n for _, n in counted.reads[:3]] == [10, 10, 5]
    # Pages of 10 (full) are followed by the next read at once: the backlog takes two
    # intervals' worth of reads in far less than one interval.
    first, third = counted.reads[0][0], counted.reads[2][0]
    assert third - first < STREAM_READ_INTERVAL_SECONDS, counted.reads


@dataclass
class CountedReceives:
    """The real SQS client, counting its receives."""

    client: Any
    receives: int = 0

    def receive_message(self, **kwargs: Any) -> Any:
        self.receives += 1
        return self.client.receive_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _queue(endpoint: str) -> tuple[Any, dict[str, str]]:
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    url = sqs.create_queue(QueueName=f"poll-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return sqs, {"QueueUrl": url, "Arn": arn["QueueArn"]}


def _pollers(poller: SqsPoller, count: int, stop: threading.Event) -> list[threading.Thread]:
    """Threads as the event sources start them for a mapping of `count` concurrency."""
    threads = [
        threading.Thread(target=poller.run, args=(stop,), kwargs={"first": i == 0})
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_an_idle_queue_is_long_polled_by_one_poller(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_sources, "SQS_WAIT_SECONDS", 1)
    sqs, queue = _queue(moto_endpoint)
    counted = CountedReceives(sqs)
    poller = SqsPoller(_mapping(1, "sqs", concurrency=4), counted, queue)
    stop = threading.Event()
    threads = _pollers(poller, 4, stop)
    time.sleep(2.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    # One 1-second long poll at a time: 3 in 2.5 s (four pollers made 12).
    assert 2 <= counted.receives <= 4, counted.receives


def test_a_busy_queue_is_polled_by_every_poller(moto_endpoint: str) -> None:
    sqs, queue = _queue(moto_endpoint)
    poller = SqsPoller(_mapping(1, "sqs", concurrency=4), sqs, queue)
    lock = threading.Lock()
    running, most = 0, 0
    invoked: list[str] = []

    def invoke(event: dict[str, Any]) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
            invoked.extend(r["body"] for r in event["Records"])

    poller.invoke = invoke
    bodies = [f"message-{i}" for i in range(16)]
    for body in bodies:
        sqs.send_message(QueueUrl=queue["QueueUrl"], MessageBody=body)
    stop = threading.Event()
    threads = _pollers(poller, 4, stop)
    deadline = time.monotonic() + 30
    while len(invoked) < len(bodies) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(invoked) == sorted(bodies)  # each once
    assert most >= 3, most  # the other pollers joined in
    left = sqs.get_queue_attributes(
        QueueUrl=queue["QueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(left.values()) == {"0"}  # every message deleted
