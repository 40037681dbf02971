"""Deleting each finished job's items, as DynamoDB's TTL would.

moto stores the TTL attribute but never deletes an expired item, so without this the local
endpoint's RSS grows with every job it has stored, and that growth, which in AWS is table
storage and in no process's memory, would hide a leak of the endpoint's own."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from headrace.core.tables.jobs import job_key
from infra.provision import AwsClients

# After a job is final and its follower gone: time for the gateway's $disconnect to remove
# the connection's subscription, an item of the job's, before the job's items go.
REAP_DELAY_SECONDS = 10.0
_BATCH = 25  # BatchWriteItem's limit


class Reaper:
    def __init__(self, aws: AwsClients, table: str) -> None:
        self.dynamodb: Any = aws.dynamodb
        self.table = table
        self.deleted = 0  # items
        self.errors = 0
        self._due: deque[tuple[float, str]] = deque()  # (when, request id), in order
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-reap", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finished(self, request_id: str) -> None:
        with self._lock:
            self._due.append((time.monotonic() + REAP_DELAY_SECONDS, request_id))

    def _loop(self) -> None:
        while not self._stopping.wait(1.0):
            while True:
                with self._lock:
                    if not self._due or self._due[0][0] > time.monotonic():
                        break
                    _, request_id = self._due.popleft()
                try:
                    self.deleted += self._reap(request_id)
                except (BotoCoreError, ClientError):  # it only leaves data behind: count it
                    self.errors += 1

    def _reap(self, request_id: str) -> int:
        keys: list[dict[str, Any]] = []
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": job_key(request_id)["pk"]},
            "ProjectionExpression": "pk, sk",
        }
        while True:
            page = self.dynamodb.query(**query)
            keys += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for start in range(0, len(keys), _BATCH):
            pending: Any = {
                self.table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + _BATCH]]
            }
            while pending:
                pending = self.dynamodb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
        return len(keys)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
