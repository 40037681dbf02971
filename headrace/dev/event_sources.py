"""`python -m headrace.dev.event_sources --resources JSON`: what Lambda's event source mappings
do on AWS, played locally from template.yaml's AWS::Lambda::EventSourceMapping resources.

Nothing in the local AWS endpoint invokes a function. This process does, with the same handler
functions and the event shapes Lambda sends:

- an SQS queue: long-polls it, invokes the function with up to BatchSize messages (`Records` of
  `messageId`, `receiptHandle`, `body`, `attributes`, ...), deletes the messages it processed
  and, with ReportBatchItemFailures, leaves those it names in `batchItemFailures` (and all of
  them if it raised) to come back after the queue's visibility timeout;
- a DynamoDB stream: reads its shard in order from TRIM_HORIZON, drops the records no filter
  pattern matches, invokes the function with the rest (`eventName`, `dynamodb.Keys`,
  `NewImage`, `OldImage`, `SequenceNumber`, `ApproximateCreationDateTime` in epoch seconds),
  and retries from the sequence number it reports (or the whole batch if it raised) until it
  succeeds: nothing is skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from headrace.core.aws import boto3_client
from headrace.core.logs import configure_logging
from headrace.core.settings import Settings
from headrace.dev.gateway import import_handler
from headrace.dev.lambda_context import LambdaContext, local_region, marshal_result
from infra.event_sources import EventSourceMapping, event_source_mappings, matches
from infra.template import load_template

logger = logging.getLogger("headrace.event_sources")

# A stream poller reads its shard at most 4 times a second, as Lambda does ("a base rate of
# 4 times per second"), busy or idle, unless a read came back full (a backlog: read on at
# once). Faster reads cost the local endpoint and this process CPU that the worker beside them
# would use, for events that AWS would not deliver sooner. How long a poller waits after a
# failed invocation, and the SQS long poll (short: a stop is quick).
STREAM_READ_INTERVAL_SECONDS = 0.25
RETRY_SECONDS = 0.5
SQS_WAIT_SECONDS = 2
# Concurrent invocations of one SQS mapping locally (AWS scales to ScalingConfig's maximum).
MAX_LOCAL_CONCURRENCY = 4

Invoke = Callable[[dict[str, Any]], Any]


def invoker(mapping: EventSourceMapping) -> Invoke:
    handler = import_handler(mapping.handler)

    def invoke(event: dict[str, Any]) -> Any:
        context = LambdaContext(
            function_name=mapping.function_logical_id,
            memory_limit_in_mb="512",
            timeout_seconds=mapping.timeout_seconds,
        )
        # Through JSON both ways, as the Lambda runtime does.
        result = handler(json.loads(json.dumps(event)), context)
        return json.loads(marshal_result(result)) if result is not None else None

    return invoke


def failed_items(result: Any, known: set[str]) -> set[str] | None:
    """The identifiers a partial batch response names; None when the response does not count
    as one (AWS then treats the whole batch as failed)."""
    if not isinstance(result, dict) or "batchItemFailures" not in result:
        return set()
    items = result["batchItemFailures"]
    if not isinstance(items, list):
        return None
    named = {str(i.get("itemIdentifier")) for i in items if isinstance(i, dict)}
    return named if named <= known and len(named) == len(items) else None


def sqs_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "dataType": value.get("DataType"),
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": local_region(),
    }


def stream_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    body = dict(record["dynamodb"])
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):  # as botocore parses it; Lambda sends epoch seconds
        body["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": record.get("eventID"),
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.get("awsRegion", local_region()),
        "dynamodb": body,
        "eventSourceARN": stream_arn,
    }


class SqsPoller:
    def __init__(self, mapping: EventSourceMapping, sqs: Any, queue: Mapping[str, str]) -> None:
        self.mapping, self.sqs = mapping, sqs
        self.url, self.arn = queue["QueueUrl"], queue["Arn"]
        self.invoke = invoker(mapping)
        self._busy = threading.Event()  # the last poll that returned found messages

    def run(self, stop: threading.Event, *, first: bool = True) -> None:
        """Poll until `stop`. Only the mapping's first poller polls an idle queue; the others
        join in while polls find messages, as Lambda adds pollers for a backlog (each idle
        long poll costs the local endpoint and this process CPU)."""
        while not stop.is_set():
            if not first and not self._busy.is_set():
                self._busy.wait(RETRY_SECONDS)
                continue
            try:
                self.poll_once()
            except Exception:
                logger.exception("%s: polling failed", self.mapping.logical_id)
                stop.wait(RETRY_SECONDS)

    def poll_once(self) -> None:
        """One long poll and the invocation of what it found."""
        found = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=min(self.mapping.batch_size, 10),
            WaitTimeSeconds=SQS_WAIT_SECONDS,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = found.get("Messages", [])
        if not messages:
            self._busy.clear()
            return
        self._busy.set()  # before the invocation: the next messages need not wait for it
        event = {"Records": [sqs_record(m, self.arn) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        logger.info("invoking %s", self.mapping.handler, extra={"message_ids": ids})
        try:
            result = self.invoke(event)
        except Exception:
            logger.exception("%s: the function failed; its batch comes back", self.mapping.handler)
            return
        failed = (
            failed_items(result, set(ids)) if self.mapping.report_batch_item_failures else set()
        )
        if failed is None:
            logger.warning("%s: malformed batchItemFailures: the batch comes back", self.url)
            return
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )


class _Stopped(Exception):
    """The process stops while a batch is still being retried."""


class StreamPoller:
    def __init__(self, mapping: EventSourceMapping, streams: Any, stream_arn: str) -> None:
        self.mapping, self.streams, self.arn = mapping, streams, stream_arn
        self.invoke = invoker(mapping)
        self.done_through: int | None = None  # the last sequence number handled (checkpoint)

    def run(self, stop: threading.Event) -> None:
        iterator = None
        while not stop.is_set():
            try:
                if iterator is None:
                    iterator = self._resume()
                iterator = self.read(iterator, stop)
            except _Stopped:
                return
            except Exception:
                logger.exception("%s: reading the stream failed", self.mapping.logical_id)
                iterator = None
                stop.wait(RETRY_SECONDS)

    def _resume(self) -> str:
        """After the checkpoint, as Lambda resumes a shard; from the starting position at first,
        or if the stream no longer holds the checkpoint (the records after it were trimmed)."""
        shard = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"][0]
        horizon = int(shard["SequenceNumberRange"]["StartingSequenceNumber"])
        kind, extra = self.mapping.starting_position, {}
        if self.done_through is not None and self.done_through + 1 >= horizon:
            kind, extra = "AFTER_SEQUENCE_NUMBER", {"SequenceNumber": str(self.done_through)}
        answer = self.streams.get_shard_iterator(
            StreamArn=self.arn, ShardId=shard["ShardId"], ShardIteratorType=kind, **extra
        )
        return str(answer["ShardIterator"])

    def read(self, iterator: str, stop: threading.Event) -> str:
        """One read and its invocation (retried until it succeeds); the next iterator, once the
        next read is due."""
        started = time.monotonic()
        page = self.streams.get_records(ShardIterator=iterator, Limit=self.mapping.batch_size)
        records = [stream_record(r, self.arn) for r in page.get("Records", [])]
        wanted = [r for r in records if self._passes(r)]
        while wanted and not stop.is_set():
            retry_from = self._invoke(wanted)
            if retry_from is None:
                wanted = []
                break
            wanted = [r for r in wanted if int(r["dynamodb"]["SequenceNumber"]) >= retry_from]
            stop.wait(RETRY_SECONDS)
        if wanted:  # stopping mid-retry: no checkpoint past what is not handled
            raise _Stopped
        if records:  # handled (or filtered out) in full: checkpoint
            self.done_through = int(records[-1]["dynamodb"]["SequenceNumber"])
        if len(records) < self.mapping.batch_size:
            stop.wait(started + STREAM_READ_INTERVAL_SECONDS - time.monotonic())
        return str(page["NextShardIterator"])

    def _passes(self, record: dict[str, Any]) -> bool:
        return not self.mapping.filters or any(matches(f, record) for f in self.mapping.filters)

    def _invoke(self, records: list[dict[str, Any]]) -> int | None:
        """None when the batch is done; else the sequence number to retry from."""
        first = int(records[0]["dynamodb"]["SequenceNumber"])
        try:
            result = self.invoke({"Records": records})
        except Exception:
            logger.exception("%s: the function failed; the batch is retried", self.mapping.handler)
            return first
        known = {str(r["dynamodb"]["SequenceNumber"]) for r in records}
        failed = failed_items(result, known) if self.mapping.report_batch_item_failures else set()
        if failed is None:
            return first
        return min((int(s) for s in failed), default=None)


def run(
    resources: Mapping[str, Mapping[str, str]],
    only: set[str] | None = None,
    concurrency: int = MAX_LOCAL_CONCURRENCY,
) -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    sqs = boto3_client(settings, "sqs")
    streams = boto3_client(settings, "dynamodbstreams")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    threads = []
    for mapping in event_source_mappings(load_template()):
        if only and mapping.logical_id not in only:
            continue
        source = resources[mapping.source_logical_id]
        poller: SqsPoller | StreamPoller
        if mapping.source == "sqs":
            poller = SqsPoller(mapping, sqs, source)
        else:
            poller = StreamPoller(mapping, streams, source["StreamArn"])
        for index in range(min(mapping.max_concurrency, concurrency)):
            name = f"{mapping.logical_id}-{index + 1}"
            more = {"first": index == 0} if isinstance(poller, SqsPoller) else {}
            threads.append(
                threading.Thread(target=poller.run, args=(stop,), kwargs=more, name=name)
            )
        logger.info(
            "playing %s: %s -> %s", mapping.logical_id, mapping.source_logical_id, mapping.handler
        )
    for thread in threads:
        thread.start()
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=SQS_WAIT_SECONDS + 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headrace.dev.event_sources")
    parser.add_argument("--resources", required=True, help="JSON: logical id -> attributes")
    parser.add_argument("--only", action="append", help="play only this mapping (repeatable)")
    parser.add_argument(
        "--concurrency", type=int, default=MAX_LOCAL_CONCURRENCY, help="pollers per SQS mapping"
    )
    args = parser.parse_args(argv)
    run(json.loads(args.resources), set(args.only) if args.only else None, args.concurrency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
