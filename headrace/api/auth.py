"""Who is calling: the API key from the request headers, checked against the key table."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import Unauthorized
from headrace.core.tables import jobs as job_table


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """`x-api-key`, the user name of HTTP basic auth (the LLM Engine client sends both), or a
    bearer token (`Authorization: Bearer KEY`, what OpenAI's SDKs send).

    `headers` must be case-insensitive or lower-cased (payload 2.0 lower-cases them). Basic
    credentials that are not base64 of UTF-8 are Unauthorized.
    """
    key = headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() != "basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII str
        raise Unauthorized(
            "authorization: basic credentials must be base64 of UTF-8 'KEY:'"
        ) from None
    return decoded.partition(":")[0] or None


def authenticate(services: ApiServices, api_key: str | None) -> str:
    """The owner id (hash of the key) of a known key; Unauthorized otherwise."""
    if not api_key:
        raise Unauthorized("missing API key: send it in the x-api-key header")
    if not _is_utf8(api_key):  # a lone surrogate, from a `\udcXX` escape in the event
        raise Unauthorized("unknown API key")
    owner = job_table.hash_api_key(api_key)
    require_known_key(services, owner)
    return owner


def require_known_key(services: ApiServices, key_id: str) -> None:
    """Unauthorized unless `key_id` (a key's hash, its requests' owner) is a key in the table.

    A key found is trusted for `api_key_cache_seconds` by this process: so a revoked key is
    refused at once by a new Lambda container, within that time by a warm one.
    """
    now = services.clock()
    if services._known_keys.get(key_id, 0.0) > now:
        return
    found = call_aws(
        services.dynamodb.get_item,
        TableName=services.settings.table_name,
        Key=job_table.api_key_id_key(key_id),
    )
    if "Item" not in found:
        services._known_keys.pop(key_id, None)
        raise Unauthorized("unknown API key")
    services._known_keys[key_id] = now + services.settings.api_key_cache_seconds


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
