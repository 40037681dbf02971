"""DynamoDB layout of webhooks: the events to deliver, every attempt, the signing secrets.

Items (same table as the jobs):
- `job#<id>` / `webhook#<event_id>`: an event the job's callback_url hears of: its body as
  POSTed (`payload`), its type, the URL and owner, when it was scheduled. Redeliver sends the
  latest again.
- `job#<id>` / `delivery#<at, ms>#<event_id>#<attempt>`: one attempt and what became of it,
  sorted by time (GET .../deliveries).
- `apikey#<key hash>` / `apikey`, the key's own item: `webhook_secret` (`whsec_...`), and for a
  rotation window `webhook_secret_previous` until `webhook_secret_previous_until`.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from headrace.core.tables.jobs import Item, api_key_id_key, job_key
from headrace.core.webhook_contracts import DeliveryAttempt

_WEBHOOK = "webhook#"
_DELIVERY = "delivery#"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """24 random bytes in Standard Webhooks' secret form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class StoredWebhook:
    request_id: str
    event_id: str
    detail_type: str
    url: str
    owner: str  # the key hash
    payload: str
    created_at: float

    @classmethod
    def from_item(cls, item: Item) -> StoredWebhook:
        return cls(
            request_id=item["pk"]["S"].removeprefix("job#"),
            event_id=item["sk"]["S"].removeprefix(_WEBHOOK),
            detail_type=item["detail_type"]["S"],
            url=item["url"]["S"],
            owner=item["owner"]["S"],
            payload=item["payload"]["S"],
            created_at=float(item["created_at"]["N"]),
        )


def webhook_key(request_id: str, event_id: str) -> Item:
    return {"pk": job_key(request_id)["pk"], "sk": {"S": _WEBHOOK + event_id}}


def put_webhook(table: str, hook: StoredWebhook, *, expires_at: int) -> dict[str, Any]:
    """Store an event to deliver. The same event stored again (a stream record read twice)
    keeps its first time."""
    return {
        "TableName": table,
        "Key": webhook_key(hook.request_id, hook.event_id),
        "UpdateExpression": (
            "SET detail_type = :type, #url = :url, #owner = :owner, payload = :payload,"
            " created_at = if_not_exists(created_at, :now), expires_at = :ttl"
        ),
        "ExpressionAttributeNames": {"#url": "url", "#owner": "owner"},
        "ExpressionAttributeValues": {
            ":type": {"S": hook.detail_type},
            ":url": {"S": hook.url},
            ":owner": {"S": hook.owner},
            ":payload": {"S": hook.payload},
            ":now": {"N": repr(hook.created_at)},
            ":ttl": {"N": str(expires_at)},
        },
    }


def get_webhook(table: str, request_id: str, event_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": webhook_key(request_id, event_id), "ConsistentRead": True}


def query_job_items(table: str, request_id: str, prefix: str, start: Item | None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
        "ExpressionAttributeValues": {":pk": job_key(request_id)["pk"], ":prefix": {"S": prefix}},
        "ConsistentRead": True,
    }
    if start:
        request["ExclusiveStartKey"] = start
    return request


def query_webhooks(table: str, request_id: str, start: Item | None = None) -> dict[str, Any]:
    return query_job_items(table, request_id, _WEBHOOK, start)


def query_attempts(table: str, request_id: str, start: Item | None = None) -> dict[str, Any]:
    return query_job_items(table, request_id, _DELIVERY, start)


def put_attempt(
    table: str, request_id: str, attempt: DeliveryAttempt, *, at: float, expires_at: int
) -> dict[str, Any]:
    sk = f"{_DELIVERY}{int(at * 1000):015d}#{attempt.event_id}#{attempt.attempt:03d}"
    return {
        "TableName": table,
        "Item": {
            "pk": job_key(request_id)["pk"],
            "sk": {"S": sk},
            "attempt": {"S": attempt.model_dump_json(exclude_none=True)},
            "expires_at": {"N": str(expires_at)},
        },
    }


def attempt_of(item: Item) -> DeliveryAttempt:
    return DeliveryAttempt.model_validate_json(item["attempt"]["S"])


# ---- signing secrets, on the API key's item ----------------------------------------------------


@dataclass(frozen=True)
class SigningSecrets:
    current: str | None
    previous: str | None
    previous_until: float | None

    @classmethod
    def from_item(cls, item: Item) -> SigningSecrets:
        until = item.get("webhook_secret_previous_until")
        return cls(
            current=item["webhook_secret"]["S"] if "webhook_secret" in item else None,
            previous=item["webhook_secret_previous"]["S"]
            if "webhook_secret_previous" in item
            else None,
            previous_until=float(until["N"]) if until else None,
        )

    def signing(self, now: float) -> list[str]:
        """The secrets that sign now: the current one, and the previous within its window."""
        live = [self.current] if self.current else []
        if self.previous and self.previous_until is not None and now < self.previous_until:
            live.append(self.previous)
        return live


def get_key_item(table: str, key_hash: str) -> dict[str, Any]:
    return {"TableName": table, "Key": api_key_id_key(key_hash), "ConsistentRead": True}


def ensure_secret(table: str, key_hash: str, secret: str) -> dict[str, Any]:
    """Give the key `secret` unless it has one; the key must exist (a revoked key gets none)."""
    return {
        "TableName": table,
        "Key": api_key_id_key(key_hash),
        "UpdateExpression": "SET webhook_secret = if_not_exists(webhook_secret, :secret)",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeValues": {":secret": {"S": secret}},
        "ReturnValues": "ALL_NEW",
    }


def rotate_secret(
    table: str, key_hash: str, *, current: str | None, new: str, previous_until: float
) -> dict[str, Any]:
    """`new` becomes the secret, `current` signs beside it until `previous_until`; conditional
    on `current` still being the secret (two rotations at once: one wins, the other retries)."""
    values: dict[str, Any] = {":new": {"S": new}}
    if current is None:
        condition = "attribute_exists(pk) AND attribute_not_exists(webhook_secret)"
        update = "SET webhook_secret = :new"
    else:
        condition = "attribute_exists(pk) AND webhook_secret = :current"
        values[":current"] = {"S": current}
        values[":until"] = {"N": repr(previous_until)}
        update = (
            "SET webhook_secret = :new, webhook_secret_previous = :current,"
            " webhook_secret_previous_until = :until"
        )
    return {
        "TableName": table,
        "Key": api_key_id_key(key_hash),
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
    }
