"""DynamoDB layout of WebSocket connections, and the writes that add and remove subscriptions.

Items (same table as the jobs, keys `pk`/`sk`):
- `conn#<connection_id>` / `conn`: the connection's owner and management endpoint (also listed
  under its API key: headrace.core.tables.api_keys).
- `conn#<connection_id>` / `sub#<request_id>`: the reverse of a subscription, for $disconnect.
- `job#<id>` / `sub#<connection_id>`: the subscription itself (headrace.core.tables.streams).

Every write here is one transaction, so a handler pays one round trip for it: a `complete`
records its job and its follower together, and $disconnect deletes everything of its
connection at once (in transactions of at most 100 actions, DynamoDB's limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headrace.core.tables.api_keys import key_connection_key
from headrace.core.tables.jobs import Item, job_key

_TWO_HOURS = 2 * 3600
_MAX_TRANSACTION_ACTIONS = 100


def connection_key(connection_id: str) -> Item:
    return {"pk": {"S": f"conn#{connection_id}"}, "sk": {"S": "conn"}}


def connection_expiry(now: float) -> int:
    """When the items of a connection opened at `now` expire: past API Gateway's 2 h limit."""
    return int(now) + _TWO_HOURS + 600


def put_connection(
    table: str, *, connection_id: str, owner: str, endpoint: str, now: float
) -> dict[str, Any]:
    return {
        "TableName": table,
        "Item": {
            **connection_key(connection_id),
            "owner": {"S": owner},
            "endpoint": {"S": endpoint},
            "connected_at": {"N": repr(now)},
            "expires_at": {"N": str(connection_expiry(now))},
        },
    }


@dataclass(frozen=True)
class Connection:
    connection_id: str
    owner: str
    endpoint: str

    @classmethod
    def from_item(cls, item: Item) -> Connection:
        return cls(
            connection_id=item["pk"]["S"].removeprefix("conn#"),
            owner=item["owner"]["S"],
            endpoint=item["endpoint"]["S"],
        )


def query_connection_items(table: str, connection_id: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"conn#{connection_id}"}},
        "ConsistentRead": True,
    }


def _subscription_puts(
    table: str, *, request_id: str, connection_id: str, endpoint: str, from_seq: int, now: float
) -> list[dict[str, Any]]:
    """The subscription and its reverse entry under the connection, as transaction actions."""
    expires = {"N": str(connection_expiry(now))}
    forward: Item = {
        "pk": job_key(request_id)["pk"],
        "sk": {"S": f"sub#{connection_id}"},
        "connection_id": {"S": connection_id},
        "endpoint": {"S": endpoint},
        "from_seq": {"N": str(from_seq)},
        "expires_at": expires,
    }
    reverse: Item = {
        "pk": {"S": f"conn#{connection_id}"},
        "sk": {"S": f"sub#{request_id}"},
        "expires_at": expires,
    }
    return [{"Put": {"TableName": table, "Item": item}} for item in (forward, reverse)]


def add_subscription(
    table: str,
    *,
    request_id: str,
    connection_id: str,
    endpoint: str,
    from_seq: int,
    now: float,
    owner: str | None = None,
) -> dict[str, Any]:
    """One transaction: the subscription, its reverse entry, and +1 on the job's
    `subscriptions`. The job must exist, and be `owner`'s when one is given: a job of another
    key fails the condition exactly as a missing one does."""
    condition = "attribute_exists(pk)"
    values: Item = {":one": {"N": "1"}}
    names: dict[str, str] = {}
    if owner is not None:
        condition += " AND #owner = :owner"
        values[":owner"] = {"S": owner}
        names["#owner"] = "owner"
    count: dict[str, Any] = {
        "TableName": table,
        "Key": job_key(request_id),
        "UpdateExpression": "ADD subscriptions :one",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    if names:
        count["ExpressionAttributeNames"] = names
    puts = _subscription_puts(
        table,
        request_id=request_id,
        connection_id=connection_id,
        endpoint=endpoint,
        from_seq=from_seq,
        now=now,
    )
    return {"TransactItems": [*puts, {"Update": count}]}


def new_job_followed(
    new_job: dict[str, Any], *, request_id: str, connection_id: str, endpoint: str, now: float
) -> dict[str, Any]:
    """One transaction: a new job (headrace.core.tables.jobs.put_new_job, counted as followed
    once) and `connection_id` following it from its first event, so no worker can start the
    job before its follower exists. The job's record names that follower too: the worker that
    claims it can attach it without a query of its subscriptions."""
    first_follower = {"connection_id": {"S": connection_id}, "endpoint": {"S": endpoint}}
    item = {**new_job["Item"], "subscriptions": {"N": "1"}, "first_follower": {"M": first_follower}}
    puts = _subscription_puts(
        new_job["TableName"],
        request_id=request_id,
        connection_id=connection_id,
        endpoint=endpoint,
        from_seq=0,
        now=now,
    )
    return {"TransactItems": [{"Put": {**new_job, "Item": item}}, *puts]}


def delete_subscription(table: str, *, request_id: str, connection_id: str) -> dict[str, Any]:
    """Both halves of a subscription, for a transact_write_items or two deletes."""
    return {"TransactItems": _subscription_deletes(table, request_id, connection_id)}


def _subscription_deletes(table: str, request_id: str, connection_id: str) -> list[dict[str, Any]]:
    keys = [
        {"pk": job_key(request_id)["pk"], "sk": {"S": f"sub#{connection_id}"}},
        {"pk": {"S": f"conn#{connection_id}"}, "sk": {"S": f"sub#{request_id}"}},
    ]
    return [{"Delete": {"TableName": table, "Key": key}} for key in keys]


def forget_connection(table: str, connection_id: str, items: list[Item]) -> list[dict[str, Any]]:
    """The transactions that delete a connection (its `items`, as query_connection_items
    found them): both halves of every subscription, its entry under its key, its record. A
    subscription's halves stay in one transaction; the record goes in the last one."""
    own = [{"Delete": {"TableName": table, "Key": connection_key(connection_id)}}]
    pairs: list[list[dict[str, Any]]] = []
    for item in items:
        sk = item["sk"]["S"]
        if sk.startswith("sub#"):
            pairs.append(_subscription_deletes(table, sk.removeprefix("sub#"), connection_id))
        elif sk == "conn":
            listing = key_connection_key(item["owner"]["S"], connection_id)
            own.insert(0, {"Delete": {"TableName": table, "Key": listing}})
    transactions: list[list[dict[str, Any]]] = [[]]
    for actions in [*pairs, own]:
        if len(transactions[-1]) + len(actions) > _MAX_TRANSACTION_ACTIONS:
            transactions.append([])
        transactions[-1].extend(actions)
    return [{"TransactItems": actions} for actions in transactions]
