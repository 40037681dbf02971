"""DynamoDB layout and the conditional writes that move a job through its lifecycle.

One table, keys `pk`/`sk`:
- `job#<request_id>` / `job`: the job record (status, attempts, lease, request, output).
- `apikey#<sha256 of key>` / `apikey`: an API key that may call the API.
- `model#<name>` / `presence`: until when a worker serves the model.

Request builders here are pure (kwargs for the low-level client) so the handlers' boto3 client
and the worker's aioboto3 client share one definition of every state transition.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from headrace.core.contracts import CompletionRequest, JobError, JobStatus, JobView

Item = dict[str, dict[str, Any]]

_JOB_SK = "job"


def job_key(request_id: str) -> Item:
    return {"pk": {"S": f"job#{request_id}"}, "sk": {"S": _JOB_SK}}


def api_key_key(api_key: str) -> Item:
    return {"pk": {"S": f"apikey#{hash_api_key(api_key)}"}, "sk": {"S": "apikey"}}


def presence_key(model: str) -> Item:
    return {"pk": {"S": f"model#{model}"}, "sk": {"S": "presence"}}


def hash_api_key(api_key: str) -> str:
    # Keys are stored and compared only as hashes; the job's owner is this hash too.
    return hashlib.sha256(api_key.encode()).hexdigest()


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


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
    lease_expires_at: float | None = None
    output: dict[str, Any] | None = None
    error: JobError | None = None
    subscriptions: int = 0  # WebSocket subscriptions ever added (headrace.core.tables.streams)

    @classmethod
    def from_item(cls, item: Item) -> JobRecord:
        def num(name: str) -> float | None:
            return float(item[name]["N"]) if name in item else None

        def text(name: str) -> str | None:
            return str(item[name]["S"]) if name in item else None

        output = text("output")
        error = text("error")
        return cls(
            request_id=item["request_id"]["S"],
            owner=item["owner"]["S"],
            model=item["model"]["S"],
            status=JobStatus(item["status"]["S"]),
            attempts=int(item.get("attempts", {"N": "0"})["N"]),
            request=CompletionRequest.model_validate_json(item["request"]["S"]),
            created_at=num("created_at") or 0.0,
            updated_at=num("updated_at") or 0.0,
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            lease_owner=text("lease_owner"),
            lease_expires_at=num("lease_expires_at"),
            output=json.loads(output) if output else None,
            error=JobError.model_validate_json(error) if error else None,
            subscriptions=int(num("subscriptions") or 0),
        )

    def view(self) -> JobView:
        return JobView(
            request_id=self.request_id,
            status=self.status,
            model=self.model,
            attempts=self.attempts,
            created_at=iso(self.created_at),
            started_at=iso(self.started_at) if self.started_at else None,
            finished_at=iso(self.finished_at) if self.finished_at else None,
            output=self.output if self.status is JobStatus.SUCCEEDED else None,
            error=self.error if self.status is JobStatus.FAILED else None,
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
        "attempts": _n(0),
        "request": {"S": request.model_dump_json()},
        "created_at": _n(now),
        "updated_at": _n(now),
        "expires_at": _n(int(now) + ttl_seconds),
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
            ":now": _n(now),
        },
    }


# A job another worker may take: waiting, or running on a lease that lapsed.
_CLAIMABLE = "#s = :queued OR (#s = :running AND lease_expires_at < :now)"
_LEASED = "#s = :running, lease_owner = :worker, lease_expires_at = :lease, started_at = :now"


def claim_recorded_job(
    table: str, *, request_id: str, worker_id: str, now: float, lease_seconds: float
) -> dict[str, Any]:
    """QUEUED (or RUNNING with a lapsed lease) -> RUNNING, leased to worker_id.

    The claim of a job whose record the submit wrote (every HTTP and WebSocket submit). Half
    the actions of `claim_job`, which also fills in a missing record: the local AWS endpoint
    spends its time per action (13 ms a claim against 7.5), on the cores that decode.
    """
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": f"SET {_LEASED}, updated_at = :now, attempts = attempts + :one",
        "ConditionExpression": _CLAIMABLE,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            ":running": {"S": JobStatus.RUNNING.value},
            ":queued": {"S": JobStatus.QUEUED.value},
            ":one": _n(1),
            ":worker": {"S": worker_id},
            ":lease": _n(now + lease_seconds),
            ":now": _n(now),
        },
        "ReturnValues": "ALL_NEW",
    }


def claim_job(
    table: str,
    *,
    request_id: str,
    owner: str,
    model: str,
    request: CompletionRequest,
    worker_id: str,
    now: float,
    lease_seconds: float,
    ttl_seconds: int,
) -> dict[str, Any]:
    """No record yet (or QUEUED, or RUNNING with a lapsed lease) -> RUNNING, leased to worker_id.

    Creating the record when it is missing lets messages that did not come through the HTTP API
    (EventBridge, a direct SendMessage) run like any other job.
    """
    claim = claim_recorded_job(
        table, request_id=request_id, worker_id=worker_id, now=now, lease_seconds=lease_seconds
    )
    claim["UpdateExpression"] = (
        f"SET {_LEASED}, updated_at = :now, attempts = if_not_exists(attempts, :zero) + :one,"
        " request_id = if_not_exists(request_id, :rid), #o = if_not_exists(#o, :owner),"
        " #m = if_not_exists(#m, :model), #r = if_not_exists(#r, :request),"
        " created_at = if_not_exists(created_at, :now),"
        " expires_at = if_not_exists(expires_at, :ttl)"
    )
    claim["ConditionExpression"] = f"attribute_not_exists(pk) OR {_CLAIMABLE}"
    claim["ExpressionAttributeNames"].update({"#o": "owner", "#m": "model", "#r": "request"})
    claim["ExpressionAttributeValues"].update(
        {
            ":zero": _n(0),
            ":rid": {"S": request_id},
            ":owner": {"S": owner},
            ":model": {"S": model},
            ":request": {"S": request.model_dump_json()},
            ":ttl": _n(int(now) + ttl_seconds),
        }
    )
    return claim


def _leased_by(worker_id: str) -> tuple[str, dict[str, Any]]:
    return "#s = :running AND lease_owner = :worker", {
        ":running": {"S": JobStatus.RUNNING.value},
        ":worker": {"S": worker_id},
    }


def extend_lease(table: str, *, request_id: str, worker_id: str, until: float) -> dict[str, Any]:
    condition, values = _leased_by(worker_id)
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": "SET lease_expires_at = :lease",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {**values, ":lease": _n(until)},
    }


def finish_job(
    table: str,
    *,
    request_id: str,
    worker_id: str,
    now: float,
    output: dict[str, Any] | None = None,
    error: JobError | None = None,
) -> dict[str, Any]:
    """RUNNING (leased to worker_id) -> SUCCEEDED with output, or FAILED with error.

    Returns the job's `subscriptions` as of the write (UPDATED_NEW), so the worker knows
    whether someone subscribed after it last looked.
    """
    condition, values = _leased_by(worker_id)
    if output is not None:
        status, field, payload = JobStatus.SUCCEEDED, "output", json.dumps(output)
    elif error is not None:
        status, field, payload = JobStatus.FAILED, "error", error.model_dump_json()
    else:
        raise ValueError("finish_job needs an output or an error")
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": (
            "SET #s = :final, #f = :payload, finished_at = :now, updated_at = :now,"
            " subscriptions = if_not_exists(subscriptions, :zero)"
            " REMOVE lease_owner, lease_expires_at"
        ),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status", "#f": field},
        "ExpressionAttributeValues": {
            **values,
            ":final": {"S": status.value},
            ":payload": {"S": payload},
            ":now": _n(now),
            ":zero": _n(0),
        },
        "ReturnValues": "UPDATED_NEW",
    }


def release_job(table: str, *, request_id: str, worker_id: str, now: float) -> dict[str, Any]:
    """RUNNING -> QUEUED: hand a job back for another attempt (shutdown, transient failure)."""
    condition, values = _leased_by(worker_id)
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": (
            "SET #s = :queued, updated_at = :now REMOVE lease_owner, lease_expires_at"
        ),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            **values,
            ":queued": {"S": JobStatus.QUEUED.value},
            ":now": _n(now),
        },
    }


def put_api_key(table: str, api_key: str, *, name: str, now: float) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {**api_key_key(api_key), "name": {"S": name}, "created_at": _n(now)},
    }


def put_presence(table: str, *, model: str, worker_id: str, until: float) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {
            **presence_key(model),
            "worker_id": {"S": worker_id},
            "served_until": _n(until),
            "expires_at": _n(int(until) + 3600),
        },
    }


def get_presences(table: str, models: list[str]) -> dict[str, Any]:
    return {
        "RequestItems": {table: {"Keys": [presence_key(m) for m in models], "ConsistentRead": True}}
    }


def served_until(item: Item) -> tuple[str, float]:
    return item["pk"]["S"].removeprefix("model#"), float(item["served_until"]["N"])
