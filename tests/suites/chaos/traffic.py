"""Submitting the workload (HTTP from a thread pool, burst or paced; some over WebSocket) and
waiting, bounded, for the jobs to end. Plain urllib: no client library under test."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from headrace.core import routes
from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from infra.provision import AwsClients
from tests.suites.chaos.followers import Followed, FollowerHub
from tests.suites.chaos.workload import JobSpec

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


@dataclass
class Submission:
    spec: JobSpec
    request_id: str | None = None
    refusal: str | None = None  # why it was not accepted: "HTTP 503", "ws: no ack", ...
    submitted_at: float = 0.0  # wall clock
    followed: Followed | None = None


def http_call(
    base_url: str, api_key: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    request.add_header("x-api-key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        payload = e.read()
        e.close()
        try:
            return e.code, json.loads(payload)
        except ValueError:
            return e.code, payload[:200].decode(errors="replace")


class Submitter:
    def __init__(self, base_url: str, api_key: str, hub: FollowerHub, *, threads: int) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.hub = hub
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="submit")

    def start(self, specs: list[JobSpec], *, rate: float) -> list[Future[Submission]]:
        """Submit every spec: at once from the pool (rate 0) or `rate` a second."""
        began = time.monotonic()
        return [
            self.pool.submit(self._one, spec, began + spec.index / rate if rate > 0 else 0.0)
            for spec in specs
        ]

    def _one(self, spec: JobSpec, not_before: float) -> Submission:
        time.sleep(max(0.0, not_before - time.monotonic()))
        submission = Submission(spec, submitted_at=time.time())
        try:
            if spec.door == "ws-complete":
                submission.followed = followed = self.hub.complete(spec)
                submission.request_id = followed.request_id
                if followed.request_id is None:
                    submission.refusal = "ws: " + "; ".join(followed.problems)[:120]
                return submission
            status, answer = http_call(
                self.base_url,
                self.api_key,
                "POST",
                f"{routes.COMPLETIONS_ASYNC}?model_endpoint_name={DEV_MODEL_NAME}",
                spec.body,
            )
        except OSError as e:
            submission.refusal = f"connection error {type(e).__name__}"
            return submission
        if status != 202 or not isinstance(answer, dict):
            submission.refusal = f"HTTP {status}"
            return submission
        submission.request_id = str(answer["request_id"])
        if spec.door == "ws-subscribe":
            submission.followed = self.hub.subscribe(spec, submission.request_id)
        return submission

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def wait_until_final(
    aws: AwsClients, table: str, request_ids: list[str], *, give_up: Callable[[], bool]
) -> tuple[set[str], float]:
    """Poll the job records (100 a call) until every one is final or give_up(); returns the
    ids still not final and when the last one became final (monotonic)."""
    pending = set(request_ids)
    last_final = time.monotonic()
    while pending and not give_up():
        for chunk in _chunks(sorted(pending), 100):
            for request_id, status in _statuses(aws, table, chunk).items():
                if status in FINAL:
                    pending.discard(request_id)
                    last_final = time.monotonic()
        if pending:
            time.sleep(0.25)
    return pending, last_final


def _statuses(aws: AwsClients, table: str, request_ids: list[str]) -> dict[str, str]:
    keys: list[Any] = [job_table.job_key(r) for r in request_ids]
    statuses: dict[str, str] = {}
    while keys:
        answer = aws.dynamodb.batch_get_item(
            RequestItems={
                table: {
                    "Keys": keys,
                    "ProjectionExpression": "request_id, #s",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ConsistentRead": True,
                }
            }
        )
        for item in answer["Responses"].get(table, []):
            statuses[str(item["request_id"]["S"])] = str(item["status"]["S"])
        unprocessed: dict[str, Any] = dict(answer.get("UnprocessedKeys") or {})
        keys = list(unprocessed.get(table, {}).get("Keys", []))
    return statuses


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
