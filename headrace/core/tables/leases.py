"""A job's lease, and the conditional writes of the worker that holds it.

A job is leased to one worker (`lease_owner`) for one `epoch`. Every claim raises the epoch,
and every write a lease holder makes is conditional on both, so a worker whose job was taken
over can write nothing more of it (its stream included: headrace.core.tables.streams). The
lease lasts while its worker's own lease does (`worker#<id>` / `lease`), so one write per
heartbeat keeps all of a worker's jobs, however many it holds.

Pure request builders (kwargs for the low-level client), like headrace.core.tables.jobs.
"""

from __future__ import annotations

import json
from typing import Any

from headrace.core.contracts import CompletionRequest, JobError, JobMessage, JobStatus
from headrace.core.tables import attempts
from headrace.core.tables.attributes import number
from headrace.core.tables.jobs import Item, JobRecord, job_key

WORKER_LEASE_TTL_S = 24 * 3600  # the record of a dead worker's lease lingers this long


def worker_lease_key(worker_id: str) -> Item:
    return {"pk": {"S": f"worker#{worker_id}"}, "sk": {"S": "lease"}}


def renew_worker_lease(table: str, *, worker_id: str, until: float) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {
            **worker_lease_key(worker_id),
            "alive_until": number(until),
            "expires_at": number(int(until) + WORKER_LEASE_TTL_S),
        },
    }


def end_worker_lease(table: str, *, worker_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": worker_lease_key(worker_id)}


def get_worker_lease(table: str, worker_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": worker_lease_key(worker_id), "ConsistentRead": True}


def alive_until(item: Item | None) -> float:
    """Until when a worker's lease (an item get_worker_lease returned) holds; 0 if none."""
    return float(item["alive_until"]["N"]) if item and "alive_until" in item else 0.0


def _epoch_is(epoch: int) -> tuple[str, dict[str, Any]]:
    # Records written before epochs existed have none: they are at epoch 0.
    condition = "epoch = :epoch" if epoch else "(attribute_not_exists(epoch) OR epoch = :epoch)"
    return condition, {":epoch": number(epoch)}


def _as_read(record: JobRecord) -> tuple[str, dict[str, Any]]:
    """A condition that holds while the job is still as `record` shows it."""
    epoch, values = _epoch_is(record.epoch)
    owner = "lease_owner = :from" if record.lease_owner else "attribute_not_exists(lease_owner)"
    if record.lease_owner:
        values[":from"] = {"S": record.lease_owner}
    values[":was"] = {"S": record.status.value}
    return f"#s = :was AND {owner} AND {epoch}", values


_CLAIMED = (
    "SET #s = :running, lease_owner = :worker, started_at = :now, updated_at = :now,"
    " epoch = if_not_exists(epoch, :zero) + :one"
)


def claim_recorded_job(
    table: str, *, request_id: str, worker_id: str, now: float, max_attempts: int
) -> dict[str, Any]:
    """QUEUED with attempts left -> RUNNING, leased to worker_id in a new epoch; attempts +1.

    The claim of a job whose record the submit wrote (every HTTP and WebSocket submit). Half
    the actions of `claim_job`, which also fills in a missing record: the local AWS endpoint
    spends its time per action (13 ms a claim against 7.5), on the cores that decode.
    """
    logged, log_values = attempts.log_claim(worker_id, now)
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": f"{_CLAIMED}, attempts = attempts + :one, {logged}",
        # A retried job (POST .../retry) has an attempt limit of its own: its attempts so far
        # plus a new allowance.
        "ConditionExpression": (
            "#s = :queued AND (attempts < attempt_limit"
            " OR (attribute_not_exists(attempt_limit) AND attempts < :max))"
        ),
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            **log_values,
            ":running": {"S": JobStatus.RUNNING.value},
            ":queued": {"S": JobStatus.QUEUED.value},
            ":zero": number(0),
            ":one": number(1),
            ":max": number(max_attempts),
            ":worker": {"S": worker_id},
            ":now": number(now),
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
    max_attempts: int,
    ttl_seconds: int,
) -> dict[str, Any]:
    """No record yet (or QUEUED with attempts left) -> RUNNING, leased to worker_id.

    Creating the record when it is missing lets messages that did not come through the HTTP API
    (EventBridge, a direct SendMessage) run like any other job.
    """
    claim = claim_recorded_job(
        table, request_id=request_id, worker_id=worker_id, now=now, max_attempts=max_attempts
    )
    logged, _ = attempts.log_claim(worker_id, now)
    claim["UpdateExpression"] = (
        f"{_CLAIMED}, attempts = if_not_exists(attempts, :zero) + :one, {logged},"
        " request_id = if_not_exists(request_id, :rid), #o = if_not_exists(#o, :owner),"
        " #m = if_not_exists(#m, :model), #r = if_not_exists(#r, :request),"
        " created_at = if_not_exists(created_at, :now),"
        " expires_at = if_not_exists(expires_at, :ttl)"
    )
    claim["ConditionExpression"] = f"attribute_not_exists(pk) OR ({claim['ConditionExpression']})"
    claim["ExpressionAttributeNames"].update({"#o": "owner", "#m": "model", "#r": "request"})
    claim["ExpressionAttributeValues"].update(
        {
            ":rid": {"S": request_id},
            ":owner": {"S": owner},
            ":model": {"S": model},
            ":request": {"S": request.model_dump_json()},
            ":ttl": number(int(now) + ttl_seconds),
        }
    )
    return claim


def take_over_job(
    table: str, *, record: JobRecord, worker_id: str, now: float, attempt: bool
) -> dict[str, Any]:
    """The job as `record` shows it (RUNNING on a lapsed lease, or QUEUED) -> RUNNING, leased to
    worker_id in the next epoch: a new attempt (`attempt`, attempts +1), or only to end it."""
    condition, values = _as_read(record)
    logged, log_values = attempts.log_claim(worker_id, now, decodes=attempt)
    values.update(log_values)
    update = f"SET #s = :running, lease_owner = :worker, updated_at = :now, epoch = :next, {logged}"
    if attempt:
        update += ", attempts = attempts + :one, started_at = :now"
        values[":one"] = number(1)
    return {
        "TableName": table,
        "Key": job_key(record.request_id),
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            **values,
            ":running": {"S": JobStatus.RUNNING.value},
            ":worker": {"S": worker_id},
            ":now": number(now),
            ":next": number(record.epoch + 1),
        },
        "ReturnValues": "ALL_NEW",
    }


def count_redrive(table: str, *, record: JobRecord, now: float) -> dict[str, Any]:
    """+1 on the times the job's message came back from the dead-letter queue, while the job
    is still as `record` shows it."""
    condition, values = _as_read(record)
    return {
        "TableName": table,
        "Key": job_key(record.request_id),
        "UpdateExpression": "SET updated_at = :now ADD redriven :one",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {**values, ":now": number(now), ":one": number(1)},
    }


def fail_unrecorded_job(
    table: str, *, job: JobMessage, error: JobError, now: float, ttl_seconds: int
) -> dict[str, Any]:
    """A FAILED record for a job whose message no worker ever claimed (no record was written)."""
    item: Item = {
        **job_key(job.request_id),
        "request_id": {"S": job.request_id},
        "owner": {"S": job.owner},
        "model": {"S": job.model},
        "status": {"S": JobStatus.FAILED.value},
        "attempts": number(0),
        "request": {"S": job.request.model_dump_json()},
        "error": {"S": error.model_dump_json()},
        "created_at": number(now),
        "updated_at": number(now),
        "finished_at": number(now),
        "expires_at": number(int(now) + ttl_seconds),
    }
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}


def _leased_by(worker_id: str, epoch: int) -> tuple[str, dict[str, Any]]:
    condition, values = _epoch_is(epoch)
    return f"#s = :running AND lease_owner = :worker AND {condition}", {
        **values,
        ":running": {"S": JobStatus.RUNNING.value},
        ":worker": {"S": worker_id},
    }


def finish_job(
    table: str,
    *,
    request_id: str,
    worker_id: str,
    epoch: int,
    now: float,
    output: dict[str, Any] | None = None,
    error: JobError | None = None,
    halted: JobStatus | None = None,
    subscriptions: int | None = None,
    first_token_at: float | None = None,
) -> dict[str, Any]:
    """RUNNING (leased to worker_id in `epoch`) -> SUCCEEDED with output, FAILED with error, or
    `halted` (CANCELLED or TIMED_OUT) with the partial output.

    Returns the job's `subscriptions` as of the write (UPDATED_NEW), so the worker knows
    whether someone subscribed after it last looked. `subscriptions` given: only if the count
    is still that (inside a transaction, which returns nothing, the condition says it).
    `first_token_at`: when the decoder gave the first token, kept unless the stream's first
    write already noted it (headrace.api.job_events).
    """
    condition, values = _leased_by(worker_id, epoch)
    if subscriptions is not None:
        condition += " AND (attribute_not_exists(subscriptions) OR subscriptions = :seen)"
        values[":seen"] = number(subscriptions)
    if output is not None:
        status = halted or JobStatus.SUCCEEDED
        field, payload = "output", json.dumps(output)
    elif error is not None:
        status, field, payload = JobStatus.FAILED, "error", error.model_dump_json()
    else:
        raise ValueError("finish_job needs an output or an error")
    logged, log_values = attempts.log_end(
        epoch, now, status.value, error.message if error is not None else None
    )
    first = ""
    if first_token_at is not None:
        first = " first_token_at = if_not_exists(first_token_at, :first),"
        values[":first"] = {"N": repr(first_token_at)}
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": (
            "SET #s = :final, #f = :payload, finished_at = :now, updated_at = :now,"
            f" subscriptions = if_not_exists(subscriptions, :zero),{first} {logged}"
            " REMOVE lease_owner"
        ),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status", "#f": field},
        "ExpressionAttributeValues": {
            **values,
            **log_values,
            ":final": {"S": status.value},
            ":payload": {"S": payload},
            ":now": number(now),
            ":zero": number(0),
        },
        "ReturnValues": "UPDATED_NEW",
    }


def release_job(
    table: str, *, request_id: str, worker_id: str, epoch: int, now: float, refund: bool = False
) -> dict[str, Any]:
    """RUNNING -> QUEUED: hand a job back for another attempt (shutdown, transient failure).
    `refund`: the attempt does not count (a shutdown is no fault of the job's); the epoch
    stays raised."""
    condition, values = _leased_by(worker_id, epoch)
    logged, log_values = attempts.log_end(epoch, now, attempts.HANDED_BACK)
    values.update(log_values)
    update = f"SET #s = :queued, updated_at = :now, {logged}"
    if refund:
        update += ", attempts = attempts - :one"
        values[":one"] = number(1)
    return {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": f"{update} REMOVE lease_owner",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            **values,
            ":queued": {"S": JobStatus.QUEUED.value},
            ":now": number(now),
        },
    }
