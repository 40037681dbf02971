"""The dev stack's DynamoDB stream poller reads a shard at Lambda's base rate (4 reads a
second), and at once while reads come back full, against a real local endpoint."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import boto3

from headrace.dev.event_sources import STREAM_READ_INTERVAL_SECONDS, StreamPoller
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


def _mapping(batch_size: int) -> EventSourceMapping:
    return EventSourceMapping(
        logical_id="TestStream",
        function_logical_id="TestFunction",
        handler="json.dumps",  # replaced below: the records are collected instead
        timeout_seconds=30,
        source="dynamodb",
        source_logical_id="Table",
        batch_size=batch_size,
        batching_window_seconds=0,
        report_batch_item_failures=False,
        filters=(),
        max_concurrency=1,
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
