"""API keys: create, list and revoke. Revoking closes every open WebSocket connection of the key.

A key is stored only as its SHA-256 (the key id, also the owner of the key's requests). A
revoked key is refused by every new Lambda container at once, by a warm one within
`api_key_cache_seconds` (headrace.api.auth), and its open connections are closed here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from headrace.api import websocket
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import HeadraceError, InvalidRequest, NotFound
from headrace.core.key_ids import PUBLIC_PREFIX
from headrace.core.tables import api_keys as key_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables.api_keys import ApiKeyRecord, KeyConnection

KEY_PREFIX = "hr-"
MAX_NAME_LENGTH = 128
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Revocation:
    key_id: str
    name: str | None  # None: the key item was already gone (an earlier revoke stopped midway)
    closed: int  # open connections closed now
    gone: int  # connections listed under the key that had already ended
    failed: int  # connections that could not be reached: still listed, revoke again


def create_key(services: ApiServices, name: str) -> tuple[str, str]:
    """A new random key and its id. The key is returned once: only its hash is stored."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name: 1 to {MAX_NAME_LENGTH} characters")
    api_key = KEY_PREFIX + secrets.token_urlsafe(32)
    request = job_table.put_api_key(
        services.settings.table_name, api_key, name=name, now=services.clock()
    )
    call_aws(services.dynamodb.put_item, **request, ConditionExpression="attribute_not_exists(pk)")
    return api_key, job_table.hash_api_key(api_key)


def list_keys(services: ApiServices) -> list[ApiKeyRecord]:
    """Every key of the table, oldest first (a Scan of the whole table)."""
    keys: list[ApiKeyRecord] = []
    start = None
    while True:
        page = call_aws(
            services.dynamodb.scan, **key_table.scan_api_keys(services.settings.table_name, start)
        )
        keys.extend(ApiKeyRecord.from_item(item) for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return sorted(keys, key=lambda k: (k.created_at or 0.0, k.key_id))


def revoke_key(services: ApiServices, key_or_id: str) -> Revocation:
    """Delete the key, then close each of its open WebSocket connections.

    The key goes first so that no new connection opens with it (a $connect that read the key
    just before is caught by the check every frame makes). Revoking an already revoked key
    closes what the earlier revoke could not; NotFound if there was neither key nor connection.
    """
    table = services.settings.table_name
    key_id = _key_id(services, key_or_id)
    deleted = call_aws(
        services.dynamodb.delete_item,
        TableName=table,
        Key=job_table.api_key_id_key(key_id),
        ReturnValues="ALL_OLD",
    )
    services._known_keys.pop(key_id, None)
    old = deleted.get("Attributes")
    name = old.get("name", {"S": ""})["S"] if old else None
    closed = gone = failed = 0
    for conn in list(_key_connections(services, key_id)):
        try:
            if websocket.close_connection(services, conn.endpoint, conn.connection_id):
                closed += 1
            else:  # it ended without a $disconnect that cleaned up: do that now
                gone += 1
                websocket.disconnect(services, connection_id=conn.connection_id)
        except HeadraceError:
            failed += 1  # left listed: a later revoke tries again
            continue
        call_aws(
            services.dynamodb.delete_item,
            TableName=table,
            Key=key_table.key_connection_key(key_id, conn.connection_id),
        )
    if old is None and closed + gone + failed == 0:
        raise NotFound("unknown API key or key id")
    return Revocation(key_id=key_id, name=name, closed=closed, gone=gone, failed=failed)


def _key_id(services: ApiServices, key_or_id: str) -> str:
    """The id of a key given as itself or as its id; a stored key decides if both could be."""
    candidates = [job_table.hash_api_key(key_or_id)]
    key_or_id = key_or_id.removeprefix(PUBLIC_PREFIX)  # the public id, hk_<hash>
    if _KEY_ID.match(key_or_id):
        candidates.insert(0, key_or_id)
    for key_id in candidates:
        found = call_aws(
            services.dynamodb.get_item,
            TableName=services.settings.table_name,
            Key=job_table.api_key_id_key(key_id),
            ConsistentRead=True,
        )
        if "Item" in found:
            return key_id
    return candidates[0]  # already revoked: its leftover connections may still be listed


def _key_connections(services: ApiServices, key_id: str) -> Iterator[KeyConnection]:
    start = None
    while True:
        page = call_aws(
            services.dynamodb.query,
            **key_table.query_key_connections(services.settings.table_name, key_id, start),
        )
        yield from (KeyConnection.from_item(item) for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return
