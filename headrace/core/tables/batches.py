"""DynamoDB layout and conditional writes of batch files and batches (OpenAI's Batch API).

- `files#<owner>` / `file#<file_id>`: an uploaded input file, or a batch's output or error file
  (its JSONL in the batch files bucket at `files/<file_id>.jsonl`).
- `batches#<owner>` / `batch#<batch_id>`: a batch. Batch ids sort by creation time, so a query
  of the owner's partition lists the newest first. `fanned`: lines recorded as jobs so far (the
  fan-out's cursor); `completed`, `failed`, `halted`: its jobs that ended SUCCEEDED, FAILED, and
  CANCELLED or TIMED_OUT.
- `job#<request_id>` / `batchcount`: that a batch job's final state was counted, so a stream
  record delivered again counts nothing.

Another key's file or batch lives in another partition: it is not found, as a missing one.
"""

from __future__ import annotations

import enum
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from headrace.core.tables.attributes import number, text
from headrace.core.tables.jobs import Item, job_key

_COUNTED_SK = "batchcount"
# Job ids of a batch: uuid5 of the batch id and the line's index, so a fan-out done twice
# names the same jobs.
_JOB_NAMESPACE = uuid.UUID("9f1d7a52-5b0e-4c57-8a3e-2f6b1c0d4e71")


class BatchStatus(enum.StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


def new_id(prefix: str, now: float | None = None) -> str:
    """`file-...` or `batch_...`: 12 hex digits of milliseconds, then 20 random ones."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}{millis:012x}{os.urandom(10).hex()}"


def job_id(batch_id: str, index: int) -> str:
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{batch_id}/{index}"))


def object_key(file_id: str) -> str:
    return f"files/{file_id}.jsonl"


def file_key(owner: str, file_id: str) -> Item:
    return {"pk": {"S": f"files#{owner}"}, "sk": {"S": f"file#{file_id}"}}


def batch_key(owner: str, batch_id: str) -> Item:
    return {"pk": {"S": f"batches#{owner}"}, "sk": {"S": f"batch#{batch_id}"}}


@dataclass(frozen=True)
class FileRecord:
    file_id: str
    owner: str
    filename: str
    purpose: str  # batch, batch_output
    size: int
    lines: int
    created_at: float
    expires_at: int
    urls: tuple[str, ...] = ()  # the routes its lines are for (an input file)

    def item(self) -> Item:
        return {
            **file_key(self.owner, self.file_id),
            "file_id": {"S": self.file_id},
            "owner": {"S": self.owner},
            "filename": {"S": self.filename},
            "purpose": {"S": self.purpose},
            "size": number(self.size),
            "lines": number(self.lines),
            "created_at": number(self.created_at),
            "expires_at": number(self.expires_at),
            "urls": {"S": ",".join(self.urls)},
        }

    @classmethod
    def from_item(cls, item: Item) -> FileRecord:
        return cls(
            file_id=item["file_id"]["S"],
            owner=item["owner"]["S"],
            filename=item["filename"]["S"],
            purpose=item["purpose"]["S"],
            size=int(item["size"]["N"]),
            lines=int(item["lines"]["N"]),
            created_at=float(item["created_at"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
            urls=tuple(url for url in item.get("urls", {"S": ""})["S"].split(",") if url),
        )


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    total: int
    created_at: float
    window_ends_at: float
    expires_at: int
    metadata: dict[str, str] | None = None
    fanned: int = 0
    fanout_done: bool = False
    fanout_claims: int = 0
    completed: int = 0
    failed: int = 0
    halted: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, float] = field(default_factory=dict)  # in_progress_at, completed_at, ...

    @property
    def finals(self) -> int:
        return self.completed + self.failed + self.halted

    @property
    def all_final(self) -> bool:
        """Every job it will have was made, and each is final."""
        return self.fanout_done and self.finals >= self.fanned

    def item(self) -> Item:
        item: Item = {
            **batch_key(self.owner, self.batch_id),
            "batch_id": {"S": self.batch_id},
            "owner": {"S": self.owner},
            "endpoint": {"S": self.endpoint},
            "input_file_id": {"S": self.input_file_id},
            "completion_window": {"S": self.completion_window},
            "status": {"S": self.status.value},
            "total": number(self.total),
            "fanned": number(self.fanned),
            "completed": number(0),
            "failed": number(0),
            "halted": number(0),
            "created_at": number(self.created_at),
            "window_ends_at": number(self.window_ends_at),
            "expires_at": number(self.expires_at),
        }
        if self.metadata is not None:
            item["metadata"] = {"S": json.dumps(self.metadata)}
        return item

    @classmethod
    def from_item(cls, item: Item) -> BatchRecord:
        def num(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        metadata = text(item, "metadata")
        return cls(
            batch_id=item["batch_id"]["S"],
            owner=item["owner"]["S"],
            endpoint=item["endpoint"]["S"],
            input_file_id=item["input_file_id"]["S"],
            completion_window=item["completion_window"]["S"],
            status=BatchStatus(item["status"]["S"]),
            total=num("total"),
            created_at=float(item["created_at"]["N"]),
            window_ends_at=float(item["window_ends_at"]["N"]),
            expires_at=num("expires_at"),
            metadata=json.loads(metadata) if metadata else None,
            fanned=num("fanned"),
            fanout_done=bool(item.get("fanout_done", {}).get("BOOL", False)),
            fanout_claims=num("fanout_claims"),
            completed=num("completed"),
            failed=num("failed"),
            halted=num("halted"),
            output_file_id=text(item, "output_file_id"),
            error_file_id=text(item, "error_file_id"),
            times={
                name.removesuffix("_at"): float(item[name]["N"]) for name in _TIMES if name in item
            },
        )


_TIMES = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "cancelling_at",
    "cancelled_at",
)


def put_new(table: str, item: Item) -> dict[str, Any]:
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}


def get(table: str, key: Item) -> dict[str, Any]:
    return {"TableName": table, "Key": key, "ConsistentRead": True}


def query_batches(table: str, owner: str, *, limit: int, after: str | None) -> dict[str, Any]:
    """The owner's batches, newest first, after the batch `after` (OpenAI's cursor)."""
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :batch)",
        "ExpressionAttributeValues": {
            ":pk": {"S": f"batches#{owner}"},
            ":batch": {"S": "batch#"},
        },
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if after is not None:
        request["ExclusiveStartKey"] = batch_key(owner, after)
    return request


def _status_update(
    table: str,
    record: BatchRecord,
    *,
    to: BatchStatus,
    when: tuple[BatchStatus, ...],
    now: float,
    extra_set: str = "",
    values: Item | None = None,
) -> dict[str, Any]:
    allowed = {f":from{i}": {"S": status.value} for i, status in enumerate(when)}
    return {
        "TableName": table,
        "Key": batch_key(record.owner, record.batch_id),
        "UpdateExpression": f"SET #s = :to, {to.value}_at = :now{extra_set}",
        "ConditionExpression": f"#s IN ({', '.join(allowed)})",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            ":to": {"S": to.value},
            ":now": number(now),
            **allowed,
            **(values or {}),
        },
        "ReturnValues": "ALL_NEW",
    }


def transition(
    table: str, record: BatchRecord, *, to: BatchStatus, when: tuple[BatchStatus, ...], now: float
) -> dict[str, Any]:
    """status -> `to` (stamping `<to>_at`), only from one of `when`."""
    return _status_update(table, record, to=to, when=when, now=now)


def finish(
    table: str,
    record: BatchRecord,
    *,
    to: BatchStatus,
    now: float,
    output_file_id: str | None,
    error_file_id: str | None,
) -> dict[str, Any]:
    """finalizing or cancelling -> completed or cancelled, naming the files written."""
    sets, values = "", {}
    for name, value in (("output_file_id", output_file_id), ("error_file_id", error_file_id)):
        if value is not None:
            sets += f", {name} = :{name}"
            values[f":{name}"] = {"S": value}
    return _status_update(
        table,
        record,
        to=to,
        when=(BatchStatus.FINALIZING, BatchStatus.CANCELLING),
        now=now,
        extra_set=sets,
        values=values,
    )


def claim_fanout(table: str, record: BatchRecord, *, now: float, lease: float) -> dict[str, Any]:
    """Hold the batch for one fan-out (or cancel) until `now + lease`; fails while another
    holds it."""
    return {
        "TableName": table,
        "Key": batch_key(record.owner, record.batch_id),
        "UpdateExpression": "SET fanout_lease = :until ADD fanout_claims :one",
        "ConditionExpression": (
            "attribute_exists(pk) AND (attribute_not_exists(fanout_lease) OR fanout_lease < :now)"
        ),
        "ExpressionAttributeValues": {
            ":until": number(now + lease),
            ":now": number(now),
            ":one": number(1),
        },
        "ReturnValues": "ALL_NEW",
    }


def advance(table: str, record: BatchRecord, *, to: int) -> dict[str, Any]:
    """The cursor from where this fan-out found it to `to`, while the batch is in progress."""
    return {
        "TableName": table,
        "Key": batch_key(record.owner, record.batch_id),
        "UpdateExpression": "SET fanned = :to",
        "ConditionExpression": "fanned = :from AND #s = :in_progress",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {
            ":to": number(to),
            ":from": number(record.fanned),
            ":in_progress": {"S": BatchStatus.IN_PROGRESS.value},
        },
        "ReturnValues": "ALL_NEW",
    }


def release(table: str, record: BatchRecord, *, done: bool) -> dict[str, Any]:
    """Let go of the fan-out lease; `done`: no job is left to make."""
    update = "REMOVE fanout_lease"
    values: Item = {}
    if done:
        update = "SET fanout_done = :true " + update
        values[":true"] = {"BOOL": True}
    request: dict[str, Any] = {
        "TableName": table,
        "Key": batch_key(record.owner, record.batch_id),
        "UpdateExpression": update,
        "ReturnValues": "ALL_NEW",
    }
    if values:
        request["ExpressionAttributeValues"] = values
    return request


# A job's final status -> the batch's counter it adds to.
COUNTERS = {"SUCCEEDED": "completed", "FAILED": "failed", "TIMED_OUT": "failed"}


# A transaction's most items: one counter update and this many markers.
COUNT_GROUP = 99


def count_final(
    table: str, *, owner: str, batch_id: str, finals: list[tuple[str, str]], expires_at: int
) -> dict[str, Any]:
    """TransactItems: mark each job of `finals` ((request_id, status), distinct ids, at most
    COUNT_GROUP) counted, only once, and add them to their batch's counters. A job counted
    before fails the whole transaction."""
    added: dict[str, int] = {}
    markers = []
    for request_id, status in finals:
        counter = COUNTERS.get(status, "halted")
        added[counter] = added.get(counter, 0) + 1
        marker = {"pk": job_key(request_id)["pk"], "sk": {"S": _COUNTED_SK}}
        item = {**marker, "expires_at": number(expires_at)}
        condition = "attribute_not_exists(pk)"
        markers.append(
            {"Put": {"TableName": table, "Item": item, "ConditionExpression": condition}}
        )
    names = sorted(added)
    update = {
        "Update": {
            "TableName": table,
            "Key": batch_key(owner, batch_id),
            "UpdateExpression": "ADD " + ", ".join(f"{n} :{n}" for n in names),
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeValues": {f":{n}": number(added[n]) for n in names},
        }
    }
    return {"TransactItems": [*markers, update]}
