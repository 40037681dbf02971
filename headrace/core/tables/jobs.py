"""DynamoDB layout and the conditional writes that move a job through its lifecycle.

One table, keys `pk`/`sk`:
- `job#<request_id>` / `job`: the job record (status, attempts, lease, request, output).
- `worker#<worker_id>` / `lease`: until when a worker is alive (headrace.core.tables.leases).
- `apikey#<sha256 of key>` / `apikey`: an API key that may call the API (its id is the hash).
  Its open WebSocket connections are listed in the same partition (headrace.core.tables.api_keys).
- `model#<name>` / `presence`: until when a worker serves the model, and the context length
  that worker enforces for it (absent when the worker did not say).
- `idem#<owner>#<sha256 of an Idempotency-Key>` / `idem`: which job a submit's key made
  (headrace.core.tables.idempotency).

Request builders here are pure (kwargs for the low-level client) so the handlers' boto3 client
and the worker's aioboto3 client share one definition of every state transition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from headrace.core.contracts import AttemptView, CompletionRequest, JobError, JobStatus, JobView
from headrace.core.key_ids import public_key_id
from headrace.core.tables import attempts as attempt_table
from headrace.core.tables.attributes import Item as Item  # re-exported: callers import it here
from headrace.core.tables.attributes import number, text

_JOB_SK = "job"


def job_key(request_id: str) -> Item:
    return {"pk": {"S": f"job#{request_id}"}, "sk": {"S": _JOB_SK}}


def api_key_key(api_key: str) -> Item:
    return api_key_id_key(hash_api_key(api_key))


def api_key_id_key(key_id: str) -> Item:
    """The key item of a key id (the hash of the key, also the owner of its requests)."""
    return {"pk": {"S": f"apikey#{key_id}"}, "sk": {"S": "apikey"}}


def presence_key(model: str) -> Item:
    return {"pk": {"S": f"model#{model}"}, "sk": {"S": "presence"}}


def hash_api_key(api_key: str) -> str:
    # Keys are stored and compared only as hashes; the job's owner is this hash too.
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class JobRecord:
    request_id: str
    owner: str
    model: str
    status: JobStatus
    attempts: int
    request: CompletionRequest
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease_owner: str | None = None
    epoch: int = 0  # raised by every claim; a lease holder's writes name it (see "leases")
    redriven: int = 0  # times its message came back from the dead-letter queue
    output: dict[str, Any] | None = None
    error: JobError | None = None
    subscriptions: int = 0  # WebSocket subscriptions ever added (headrace.core.tables.connections)
    cancel_requested_at: float | None = None  # a cancel asked for while the job was not final
    attempt_limit: int | None = None  # set by a retry: attempts so far plus a new allowance
    retries: int = 0  # times POST .../retry queued it again
    requeued_at: float | None = None  # the last retry: its deadline counts from here
    dead_lettered_at: float | None = None  # a worker last found its message in the DLQ
    attempt_history: tuple[AttemptView, ...] = ()
    # (connection id, endpoint): the WebSocket connection that submitted it, subscribed from
    # its first event (headrace.core.tables.connections.new_job_followed).
    first_follower: tuple[str, str] | None = None

    @classmethod
    def from_item(cls, item: Item) -> JobRecord:
        def num(name: str) -> float | None:
            return float(item[name]["N"]) if name in item else None

        output = text(item, "output")
        error = text(item, "error")
        status = JobStatus(item["status"]["S"])
        return cls(
            request_id=item["request_id"]["S"],
            owner=item["owner"]["S"],
            model=item["model"]["S"],
            status=status,
            attempts=int(item.get("attempts", {"N": "0"})["N"]),
            request=CompletionRequest.model_validate_json(item["request"]["S"]),
            created_at=num("created_at") or 0.0,
            updated_at=num("updated_at") or 0.0,
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            lease_owner=text(item, "lease_owner"),
            epoch=int(num("epoch") or 0),
            redriven=int(num("redriven") or 0),
            output=json.loads(output) if output else None,
            error=JobError.model_validate_json(error) if error else None,
            subscriptions=int(num("subscriptions") or 0),
            cancel_requested_at=num("cancel_requested_at"),
            attempt_limit=int(limit) if (limit := num("attempt_limit")) is not None else None,
            retries=int(num("retries") or 0),
            requeued_at=num("requeued_at"),
            dead_lettered_at=num("dead_lettered_at"),
            attempt_history=tuple(
                attempt_table.history(item, status=status, epoch=int(num("epoch") or 0))
            ),
            first_follower=_first_follower(item),
        )

    def has_attempts_left(self, max_attempts: int) -> bool:
        """Whether another claim may decode it: HEADRACE_MAX_ATTEMPTS, or the allowance a
        retry gave it."""
        return self.attempts < (self.attempt_limit or max_attempts)

    @property
    def deadline(self) -> float | None:
        """When the job must be final (its request's timeout_seconds after the submit, or after
        the last retry)."""
        timeout = self.request.timeout_seconds
        return (self.requeued_at or self.created_at) + timeout if timeout else None

    def halt_due(self, now: float) -> JobStatus | None:
        """How the job must end instead of being decoded (further): CANCELLED if a cancel was
        asked for, TIMED_OUT if its deadline passed; None if neither."""
        if self.cancel_requested_at is not None:
            return JobStatus.CANCELLED
        deadline = self.deadline
        return JobStatus.TIMED_OUT if deadline is not None and now >= deadline else None

    def view(self) -> JobView:
        has_output = self.status is JobStatus.SUCCEEDED or self.status.is_halted  # or partial
        return JobView(
            request_id=self.request_id,
            status=self.status,
            model=self.model,
            attempts=self.attempts,
            created_at=iso(self.created_at),
            started_at=iso(self.started_at) if self.started_at else None,
            finished_at=iso(self.finished_at) if self.finished_at else None,
            output=self.output if has_output else None,
            error=self.error if self.status is JobStatus.FAILED else None,
            deadline=iso(self.deadline) if self.deadline else None,
            cancel_requested_at=iso(self.cancel_requested_at) if self.cancel_requested_at else None,
            priority=self.request.priority,
            attempt_history=list(self.attempt_history),
            dead_lettered_at=iso(self.dead_lettered_at) if self.dead_lettered_at else None,
            retries=self.retries,
            owner=public_key_id(self.owner),
            metadata=self.request.metadata,
            callback_url=self.request.callback_url,
        )


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="milliseconds")


def put_new_job(
    table: str,
    *,
    request_id: str,
    owner: str,
    model: str,
    request: CompletionRequest,
    now: float,
    ttl_seconds: int,
) -> dict[str, Any]:
    item: Item = {
        **job_key(request_id),
        "request_id": {"S": request_id},
        "owner": {"S": owner},
        "model": {"S": model},
        "status": {"S": JobStatus.QUEUED.value},
        "attempts": number(0),
        "request": {"S": request.model_dump_json()},
        "created_at": number(now),
        "updated_at": number(now),
        "expires_at": number(int(now) + ttl_seconds),
    }
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(pk)",
    }


def get_job(table: str, request_id: str, *, consistent: bool = True) -> dict[str, Any]:
    return {"TableName": table, "Key": job_key(request_id), "ConsistentRead": consistent}


def fail_queued_job(table: str, request_id: str, *, reason: str, now: float) -> dict[str, Any]:
    """QUEUED -> FAILED, for a job whose message never reached the queue."""
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": "SET #s = :failed, #e = :error, finished_at = :now, updated_at = :now",
        "ConditionExpression": "#s = :queued",
        "ExpressionAttributeNames": {"#s": "status", "#e": "error"},
        "ExpressionAttributeValues": {
            ":failed": {"S": JobStatus.FAILED.value},
            ":queued": {"S": JobStatus.QUEUED.value},
            ":error": {"S": JobError(message=reason, type="enqueue_failed").model_dump_json()},
            ":now": number(now),
        },
    }


def cancel_queued_job(
    table: str, *, request_id: str, owner: str, now: float, output: dict[str, Any]
) -> dict[str, Any]:
    """QUEUED, never started -> CANCELLED at once, with `output` (nothing decoded). A job that
    ran before (handed back) may have streamed: its worker ends it (`request_cancel`)."""
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": (
            "SET #s = :cancelled, #out = :output, cancel_requested_at = :now,"
            " finished_at = :now, updated_at = :now"
        ),
        "ConditionExpression": (
            "#s = :queued AND #o = :owner AND (attribute_not_exists(epoch) OR epoch = :zero)"
        ),
        "ExpressionAttributeNames": {"#s": "status", "#o": "owner", "#out": "output"},
        "ExpressionAttributeValues": {
            ":cancelled": {"S": JobStatus.CANCELLED.value},
            ":queued": {"S": JobStatus.QUEUED.value},
            ":owner": {"S": owner},
            ":output": {"S": json.dumps(output)},
            ":zero": number(0),
            ":now": number(now),
        },
        "ReturnValues": "ALL_NEW",
    }


def request_cancel(table: str, *, request_id: str, owner: str, now: float) -> dict[str, Any]:
    """Record a cancel on a job that is not final (its status unchanged): the worker that holds
    it, or the next to claim it, stops it and ends it CANCELLED. The first request's time stays."""
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": (
            "SET cancel_requested_at = if_not_exists(cancel_requested_at, :now), updated_at = :now"
        ),
        "ConditionExpression": "#o = :owner AND (#s = :queued OR #s = :running)",
        "ExpressionAttributeNames": {"#s": "status", "#o": "owner"},
        "ExpressionAttributeValues": {
            ":queued": {"S": JobStatus.QUEUED.value},
            ":running": {"S": JobStatus.RUNNING.value},
            ":owner": {"S": owner},
            ":now": number(now),
        },
        "ReturnValues": "ALL_NEW",
    }


def put_api_key(table: str, api_key: str, *, name: str, now: float) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {**api_key_key(api_key), "name": {"S": name}, "created_at": number(now)},
    }


def put_presence(
    table: str, *, model: str, worker_id: str, until: float, context_length: int | None = None
) -> dict[str, Any]:
    item = {
        **presence_key(model),
        "worker_id": {"S": worker_id},
        "served_until": number(until),
        "expires_at": number(int(until) + 3600),
    }
    if context_length is not None:
        item["context_length"] = number(context_length)
    return {"TableName": table, "Item": item}


def get_presences(table: str, models: list[str]) -> dict[str, Any]:
    return {
        "RequestItems": {table: {"Keys": [presence_key(m) for m in models], "ConsistentRead": True}}
    }


@dataclass(frozen=True)
class ModelPresence:
    """What the last worker to announce a model said: until when it serves it, and the context
    length (prompt plus new tokens) it enforces, if it said."""

    model: str
    served_until: float
    context_length: int | None


def model_presence(item: Item) -> ModelPresence:
    declared = item.get("context_length")
    return ModelPresence(
        model=item["pk"]["S"].removeprefix("model#"),
        served_until=float(item["served_until"]["N"]),
        context_length=int(declared["N"]) if declared else None,
    )


def _first_follower(item: Item) -> tuple[str, str] | None:
    follower = item.get("first_follower", {}).get("M")
    if not follower:
        return None
    return follower["connection_id"]["S"], follower["endpoint"]["S"]
