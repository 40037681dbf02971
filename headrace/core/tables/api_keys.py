"""DynamoDB layout of API keys beyond the key item itself (headrace.core.tables.jobs).

- `apikey#<key id>` / `apikey`: the key (headrace.core.tables.jobs.api_key_key): its `name` and
  `created_at`. The key id is the SHA-256 of the key; the key itself is never stored.
- `apikey#<key id>` / `conn#<connection_id>`: an open WebSocket connection of that key and its
  management endpoint, written with the connection at $connect and deleted at $disconnect, so
  revoking a key finds (one Query) and closes every connection it has open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headrace.core.tables.jobs import Item, api_key_id_key

_CONN_PREFIX = "conn#"
_KEY_PREFIX = "apikey#"


def key_connection_key(key_id: str, connection_id: str) -> Item:
    return {"pk": api_key_id_key(key_id)["pk"], "sk": {"S": f"{_CONN_PREFIX}{connection_id}"}}


def put_key_connection(
    table: str, *, key_id: str, connection_id: str, endpoint: str, expires_at: int
) -> dict[str, Any]:
    """The index entry of an open connection (a Put; `expires_at` as the connection item's)."""
    return {
        "TableName": table,
        "Item": {
            **key_connection_key(key_id, connection_id),
            "endpoint": {"S": endpoint},
            "expires_at": {"N": str(expires_at)},
        },
    }


def query_key_connections(table: str, key_id: str, start: Item | None = None) -> dict[str, Any]:
    """One page of a key's open connections; `start`: the previous page's LastEvaluatedKey."""
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :conn)",
        "ExpressionAttributeValues": {
            ":pk": api_key_id_key(key_id)["pk"],
            ":conn": {"S": _CONN_PREFIX},
        },
        "ConsistentRead": True,
    }
    if start:
        request["ExclusiveStartKey"] = start
    return request


@dataclass(frozen=True)
class KeyConnection:
    connection_id: str
    endpoint: str

    @classmethod
    def from_item(cls, item: Item) -> KeyConnection:
        return cls(
            connection_id=item["sk"]["S"].removeprefix(_CONN_PREFIX),
            endpoint=item["endpoint"]["S"],
        )


def scan_api_keys(table: str, start: Item | None = None) -> dict[str, Any]:
    """One page of a Scan for the key items: the whole table is read (an operator's command)."""
    request: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(pk, :key) AND sk = :sk",
        "ExpressionAttributeValues": {":key": {"S": _KEY_PREFIX}, ":sk": {"S": "apikey"}},
        "ProjectionExpression": "pk, #name, created_at",
        "ExpressionAttributeNames": {"#name": "name"},
        "ConsistentRead": True,
    }
    if start:
        request["ExclusiveStartKey"] = start
    return request


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    name: str
    created_at: float | None

    @classmethod
    def from_item(cls, item: Item) -> ApiKeyRecord:
        return cls(
            key_id=item["pk"]["S"].removeprefix(_KEY_PREFIX),
            name=item["name"]["S"] if "name" in item else "",
            created_at=float(item["created_at"]["N"]) if "created_at" in item else None,
        )
