"""A job's attempts as its record keeps them: who claimed it when, and how each claim ended.

Two lists on the job item, each only ever appended to (`list_append` on `if_not_exists`, so a
write never depends on what the item held before, and a claim or an end costs no extra call):

- `attempt_log`: one entry per claim, in claim order, so entry N is the claim that raised the
  job's epoch to N (every claim raises it by one): the worker, when, and whether it decoded
  (a claim may only end the job: a cancel found at claim, a job given up);
- `attempt_ends`: one entry per claim that ended in a write of its own: the epoch, when, the
  outcome (the final status, or HANDED_BACK) and the error, if any.

A claim with no end is the running one (its epoch is the job's and the job RUNNING), or one
whose worker was lost: its lease lapsed and a later claim took the job over.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from headrace.core.contracts import AttemptView, JobStatus
from headrace.core.tables.attributes import Item, number

HANDED_BACK = "HANDED_BACK"  # a worker gave the job back (shutdown, a transient failure)
LOST = "LOST"  # the worker's lease lapsed before it ended the attempt

_NO_ENTRIES: dict[str, list[Any]] = {"L": []}


def log_claim(worker_id: str, now: float, *, decodes: bool = True) -> tuple[str, dict[str, Any]]:
    """The SET clause (without SET) and values that append a claim to `attempt_log`."""
    entry = {"M": {"worker": {"S": worker_id}, "at": number(now), "decodes": {"BOOL": decodes}}}
    return (
        "attempt_log = list_append(if_not_exists(attempt_log, :no_entries), :claim)",
        {":no_entries": _NO_ENTRIES, ":claim": {"L": [entry]}},
    )


def log_end(
    epoch: int, now: float, outcome: str, error: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The SET clause (without SET) and values that append an end to `attempt_ends`."""
    entry: Item = {"epoch": number(epoch), "at": number(now), "outcome": {"S": outcome}}
    if error:
        entry["error"] = {"S": error}
    return (
        "attempt_ends = list_append(if_not_exists(attempt_ends, :no_entries), :end)",
        {":no_entries": _NO_ENTRIES, ":end": {"L": [{"M": entry}]}},
    )


def history(item: Item, *, status: JobStatus, epoch: int) -> list[AttemptView]:
    """Every claim of the job, oldest first, with how it ended."""
    ends = {int(e["M"]["epoch"]["N"]): e["M"] for e in item.get("attempt_ends", {}).get("L", [])}
    views = []
    for attempt, claim in enumerate(item.get("attempt_log", {}).get("L", []), start=1):
        fields = claim["M"]
        end = ends.get(attempt)
        if end is not None:
            outcome, ended_at = end["outcome"]["S"], _iso(float(end["at"]["N"]))
        else:
            running = attempt == epoch and status is JobStatus.RUNNING
            outcome, ended_at = (JobStatus.RUNNING.value if running else LOST), None
        views.append(
            AttemptView(
                attempt=attempt,
                worker=fields["worker"]["S"],
                decodes=fields["decodes"]["BOOL"],
                started_at=_iso(float(fields["at"]["N"])),
                ended_at=ended_at,
                outcome=outcome,
                error=end["error"]["S"] if end is not None and "error" in end else None,
            )
        )
    return views


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="milliseconds")


def requeue_job(
    table: str, *, key: Item, owner: str, now: float, max_attempts: int
) -> dict[str, Any]:
    """FAILED or TIMED_OUT -> QUEUED (POST .../retry): a new allowance of `max_attempts`
    claims on top of those it had, its deadline counted from now, no result. Its epoch stays,
    so the next claim is a later attempt of the same job."""
    return {
        "TableName": table,
        "Key": key,
        "UpdateExpression": (
            "SET #s = :queued, attempt_limit = attempts + :max, requeued_at = :now,"
            " updated_at = :now, redriven = :zero,"
            " retries = if_not_exists(retries, :zero) + :one"
            " REMOVE finished_at, #out, #err, cancel_requested_at, lease_owner"
        ),
        "ConditionExpression": "#o = :owner AND (#s = :failed OR #s = :timed_out)",
        "ExpressionAttributeNames": {
            "#s": "status",
            "#o": "owner",
            "#out": "output",
            "#err": "error",
        },
        "ExpressionAttributeValues": {
            ":queued": {"S": JobStatus.QUEUED.value},
            ":failed": {"S": JobStatus.FAILED.value},
            ":timed_out": {"S": JobStatus.TIMED_OUT.value},
            ":owner": {"S": owner},
            ":max": number(max_attempts),
            ":now": number(now),
            ":zero": number(0),
            ":one": number(1),
        },
        "ReturnValues": "ALL_NEW",
    }


def note_dead_lettered(table: str, *, key: Item, now: float) -> dict[str, Any]:
    """Record that a worker found the job's message in the dead-letter queue."""
    return {
        "TableName": table,
        "Key": key,
        "UpdateExpression": "SET dead_lettered_at = :now",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeValues": {":now": number(now)},
    }
