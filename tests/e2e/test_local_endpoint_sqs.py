"""The local AWS endpoint's SQS under concurrent consumers: no request fails with a 5xx.

moto's SQS receive walks a queue's messages while other requests change them; served on
concurrent threads it answered 500 (`list.remove(x): x not in list`, `Set changed size during
iteration`). Threads here receive, delete, release and leave messages of one queue with a DLQ
at once, as several workers do, with botocore's retries off so that no 500 is hidden.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

CONSUMERS = 8
MESSAGES = 300
SECONDS = 8.0
# Enough receives to call the queue hammered: a slow or busy machine gets more time for them
# (up to CAP_SECONDS) rather than a failure that says nothing about the endpoint.
MIN_RECEIVES = 60
CAP_SECONDS = 40.0


def sqs_client(endpoint: str) -> Any:
    config = Config(retries={"total_max_attempts": 1}, max_pool_connections=CONSUMERS + 2)
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", config=config
    )


def queue_with_dlq(sqs: Any) -> tuple[str, str]:
    name = f"hammer-{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    dlq_arn = found["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}
    attributes = {"VisibilityTimeout": "1", "RedrivePolicy": json.dumps(redrive)}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url


class Hammer:
    """Counts every answer by action and HTTP status; 5xx answers are kept in full."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.server_errors: list[str] = []
        self._lock = threading.Lock()

    def call(self, action: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self.sqs, action)(QueueUrl=self.queue_url, **kwargs)
            status = 200
        except ClientError as e:
            answer, status = {}, e.response["ResponseMetadata"]["HTTPStatusCode"]
            if status >= 500:
                with self._lock:
                    self.server_errors.append(f"{action}: {e}")
        with self._lock:
            self.statuses[action, status] += 1
        return answer

    def going(self, until: float, cap: float) -> bool:
        """Until `until`, then on until MIN_RECEIVES receives succeeded, but not past `cap`."""
        now = time.monotonic()
        if now >= cap:
            return False
        with self._lock:
            received = self.statuses["receive_message", 200]
        return now < until or received < MIN_RECEIVES

    def consume(self, seed: int, until: float, cap: float) -> None:
        chance = random.Random(seed)
        while self.going(until, cap):
            answer = self.call("receive_message", MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for message in answer.get("Messages", []):
                handle = message["ReceiptHandle"]
                choice = chance.random()
                if choice < 0.4:
                    self.call("delete_message", ReceiptHandle=handle)
                elif choice < 0.8:  # released: received again, then moved to the DLQ
                    self.call(
                        "change_message_visibility", ReceiptHandle=handle, VisibilityTimeout=0
                    )
                # else left to its visibility timeout

    def produce(self, until: float, cap: float) -> None:
        while self.going(until, cap):
            entries = [{"Id": str(i), "MessageBody": uuid.uuid4().hex} for i in range(10)]
            self.call("send_message_batch", Entries=entries)
            time.sleep(0.05)


def test_concurrent_consumers_get_no_server_error(moto_endpoint: str) -> None:
    sqs = sqs_client(moto_endpoint)
    queue_url, dlq_url = queue_with_dlq(sqs)
    for start in range(0, MESSAGES, 10):
        entries = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    hammer = Hammer(sqs, queue_url)
    started = time.monotonic()
    until, cap = started + SECONDS, started + CAP_SECONDS
    threads = [
        threading.Thread(target=hammer.consume, args=(seed, until, cap))
        for seed in range(CONSUMERS)
    ]
    threads.append(threading.Thread(target=hammer.produce, args=(until, cap)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CAP_SECONDS + 30)
    assert not any(thread.is_alive() for thread in threads)

    assert hammer.server_errors == [], hammer.server_errors[:5]
    ok = {action: hammer.statuses[action, 200] for action, _ in hammer.statuses}
    # The hammer did hit: every kind of call succeeded many times, and messages reached the DLQ.
    assert ok["receive_message"] > 50, hammer.statuses
    assert ok["delete_message"] > 50, hammer.statuses
    assert ok["change_message_visibility"] > 50, hammer.statuses
    dead = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(dead) > 0


def test_a_second_delete_of_a_message_succeeds_as_on_sqs(moto_endpoint: str) -> None:
    sqs = sqs_client(moto_endpoint)
    queue_url, _ = queue_with_dlq(sqs)
    sqs.send_message(QueueUrl=queue_url, MessageBody="once")
    [message] = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    for _ in range(2):  # the endpoint remembers the latest deleted receipt handles, not all
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle="not-a-handle-it-gave")


def test_the_deleted_handles_a_queue_remembers_are_bounded() -> None:
    from headrace.dev.moto_server import DELETED_HANDLES_KEPT, _RecentHandles

    handles = _RecentHandles()
    handles.update(f"h{i}" for i in range(DELETED_HANDLES_KEPT + 5))
    assert len(handles) == DELETED_HANDLES_KEPT
    assert "h4" not in handles and "h5" in handles and f"h{DELETED_HANDLES_KEPT + 4}" in handles
