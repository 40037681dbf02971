"""DynamoDB layout and conditional writes of Idempotency-Key records (headrace.api.idempotency).

- `idem#<owner>#<sha256 of the key>` / `idem`: one submit's key, scoped to its API key (the
  owner). `fingerprint`: the SHA-256 of the canonical request, so a reuse with another body is
  told apart. `state`: IN_PROGRESS while its first request records and enqueues the job (until
  `in_progress_until`, after which another request may take the key over: the first one died),
  then COMPLETE with the job's `request_id`. `token`: which request holds an IN_PROGRESS record.
  `expires_at`: the end of the retention period (the table's TTL attribute; DynamoDB deletes
  late, so every condition also compares it with the time).

The key itself is stored only as a hash: it may hold any bytes a client chose.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any

from headrace.core.tables.jobs import Item

_SK = "idem"


class KeyState(enum.StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"


def record_key(owner: str, idempotency_key: str) -> Item:
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return {"pk": {"S": f"idem#{owner}#{digest}"}, "sk": {"S": _SK}}


def claim(
    table: str,
    *,
    owner: str,
    idempotency_key: str,
    fingerprint: str,
    token: str,
    now: float,
    in_progress_seconds: float,
    retention_seconds: int,
) -> dict[str, Any]:
    """Put an IN_PROGRESS record unless a live one holds the key: none, one past its retention,
    or one left IN_PROGRESS past `in_progress_until` by a request that never finished."""
    item: Item = {
        **record_key(owner, idempotency_key),
        "state": {"S": KeyState.IN_PROGRESS.value},
        "fingerprint": {"S": fingerprint},
        "token": {"S": token},
        "created_at": {"N": repr(now)},
        "in_progress_until": {"N": repr(now + in_progress_seconds)},
        "expires_at": {"N": str(int(now) + retention_seconds)},
    }
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(pk) OR expires_at < :now_s"
        " OR (#state = :in_progress AND in_progress_until < :now)",
        "ExpressionAttributeNames": {"#state": "state"},
        "ExpressionAttributeValues": {
            ":now": {"N": repr(now)},
            ":now_s": {"N": str(int(now))},
            ":in_progress": {"S": KeyState.IN_PROGRESS.value},
        },
    }


def complete(
    table: str, *, owner: str, idempotency_key: str, token: str, request_id: str
) -> dict[str, Any]:
    """IN_PROGRESS -> COMPLETE with the job's request_id, only by the request holding it."""
    return {
        "TableName": table,
        "Key": record_key(owner, idempotency_key),
        "UpdateExpression": "SET #state = :complete, request_id = :request_id",
        "ConditionExpression": "#state = :in_progress AND #token = :token",
        "ExpressionAttributeNames": {"#state": "state", "#token": "token"},
        "ExpressionAttributeValues": {
            ":complete": {"S": KeyState.COMPLETE.value},
            ":in_progress": {"S": KeyState.IN_PROGRESS.value},
            ":token": {"S": token},
            ":request_id": {"S": request_id},
        },
    }


def release(table: str, *, owner: str, idempotency_key: str, token: str) -> dict[str, Any]:
    """Delete an IN_PROGRESS record whose request failed, so that a retry submits anew."""
    return {
        "TableName": table,
        "Key": record_key(owner, idempotency_key),
        "ConditionExpression": "#state = :in_progress AND #token = :token",
        "ExpressionAttributeNames": {"#state": "state", "#token": "token"},
        "ExpressionAttributeValues": {
            ":in_progress": {"S": KeyState.IN_PROGRESS.value},
            ":token": {"S": token},
        },
    }


def get(table: str, *, owner: str, idempotency_key: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": record_key(owner, idempotency_key),
        "ConsistentRead": True,
    }


@dataclass(frozen=True)
class KeyRecord:
    state: KeyState
    fingerprint: str
    token: str
    in_progress_until: float
    expires_at: int
    request_id: str | None

    @classmethod
    def from_item(cls, item: Item) -> KeyRecord:
        request_id = item.get("request_id")
        return cls(
            state=KeyState(item["state"]["S"]),
            fingerprint=item["fingerprint"]["S"],
            token=item["token"]["S"],
            in_progress_until=float(item["in_progress_until"]["N"]),
            expires_at=int(item["expires_at"]["N"]),
            request_id=request_id["S"] if request_id else None,
        )
