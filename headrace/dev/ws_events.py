"""API Gateway WebSocket API semantics, free of any web framework.

The Lambda proxy events of the CONNECT, MESSAGE and DISCONNECT event types, route selection,
what a route response sends back, and the gateway's own error frames:
https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api.html

Unlike HTTP API payload 2.0, WebSocket events keep header names as the client sent them (`Host`,
`Sec-WebSocket-Key`, ...) in `headers` (last value wins) and `multiValueHeaders`; look them up
without regard to case.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from headrace.dev.apigw import API_ID, MalformedResponseError, clf_time, new_request_id

CONNECT = "$connect"
DISCONNECT = "$disconnect"
DEFAULT = "$default"
RESERVED_ROUTE_KEYS = frozenset({CONNECT, DISCONNECT, DEFAULT})

# Messages API Gateway itself sends on a connection (with connectionId and requestId).
INTERNAL_ERROR_MESSAGE = "Internal server error"
TIMED_OUT_MESSAGE = "Endpoint request timed out"
NO_ROUTE_MESSAGE = "Forbidden"

# Request headers API Gateway does not pass on to the $connect integration.
_HOP_BY_HOP = frozenset({"connection", "upgrade", "keep-alive", "transfer-encoding"})
_ID_ALPHABET = string.ascii_letters + string.digits


def new_connection_id() -> str:
    """An id shaped like API Gateway's connection ids ("L0SM9cOFvHcCIhw=")."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def epoch_ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def iso_time(now: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as the @connections API reports times."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class ConnectionInfo:
    """What API Gateway remembers of a connection from its upgrade request."""

    connection_id: str
    stage: str
    domain_name: str  # the Host header, port included
    source_ip: str
    user_agent: str
    connected_at: datetime


def route_selection_key(expression: str) -> str:
    """The body property a `$request.body.<name>` RouteSelectionExpression selects on."""
    prefix = "$request.body."
    name = expression.strip()
    if name.startswith("${") and name.endswith("}"):
        name = "$" + name[2:-1]
    if not name.startswith(prefix) or not name[len(prefix) :].isidentifier():
        raise ValueError(f"unsupported RouteSelectionExpression {expression!r}")
    return name[len(prefix) :]


def select_route(text: str, route_keys: Collection[str], key: str = "action") -> str:
    """The route a text frame goes to: a JSON object whose `key` names a declared (non-reserved)
    route, else `$default` (non-JSON frames and unknown actions included)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
        return DEFAULT
    if isinstance(value, dict):
        action = value.get(key)
        if isinstance(action, str) and action in route_keys and action not in RESERVED_ROUTE_KEYS:
            return action
    return DEFAULT


def connect_headers(
    headers: Iterable[tuple[str, str]], *, source_ip: str, port: int | None, scheme: str
) -> list[tuple[str, str]]:
    """The upgrade request's headers as the $connect integration gets them: hop-by-hop ones
    dropped, X-Forwarded-* and X-Amzn-Trace-Id added (client names keep their case)."""
    headers = list(headers)
    out = [
        (name, value)
        for name, value in headers
        if name.lower() not in _HOP_BY_HOP and name.lower() != "x-forwarded-for"
    ]
    names = {name.lower() for name, _ in out}
    if "x-amzn-trace-id" not in names:
        out.append(("X-Amzn-Trace-Id", f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"))
    forwarded = [value for name, value in headers if name.lower() == "x-forwarded-for"]
    out.append(("X-Forwarded-For", ", ".join([*forwarded, source_ip])))
    if "x-forwarded-port" not in names and port is not None:
        out.append(("X-Forwarded-Port", str(port)))
    if "x-forwarded-proto" not in names:
        out.append(("X-Forwarded-Proto", scheme))
    return out


def _single_and_multi(
    items: Iterable[tuple[str, str]], *, fold_case: bool
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value per name, every value per name); with fold_case, names differing only in case
    are one name, spelled as first seen."""
    spelled: dict[str, str] = {}
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in items:
        key = spelled.setdefault(name.lower(), name) if fold_case else name
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def _request_context(
    info: ConnectionInfo,
    *,
    route_key: str,
    event_type: str,
    request_id: str,
    now: datetime,
    identity: dict[str, str],
) -> dict[str, Any]:
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": clf_time(now),
        "messageDirection": "IN",
        "stage": info.stage,
        "connectedAt": epoch_ms(info.connected_at),
        "requestTimeEpoch": epoch_ms(now),
        "identity": identity,
        "requestId": request_id,
        "domainName": info.domain_name,
        "connectionId": info.connection_id,
        "apiId": API_ID,
    }


def build_connect_event(
    info: ConnectionInfo,
    *,
    headers: Iterable[tuple[str, str]],
    query: Iterable[tuple[str, str]],
    request_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The CONNECT event: the upgrade request's headers and query string (decoded)."""
    single_headers, multi_headers = _single_and_multi(headers, fold_case=True)
    event: dict[str, Any] = {"headers": single_headers, "multiValueHeaders": multi_headers}
    single_query, multi_query = _single_and_multi(query, fold_case=False)
    if single_query:
        event["queryStringParameters"] = single_query
        event["multiValueQueryStringParameters"] = multi_query
    event["requestContext"] = _request_context(
        info,
        route_key=CONNECT,
        event_type="CONNECT",
        request_id=request_id,
        now=now,
        identity={"sourceIp": info.source_ip, "userAgent": info.user_agent},
    )
    event["isBase64Encoded"] = False
    return event


def build_message_event(
    info: ConnectionInfo,
    *,
    route_key: str,
    data: str | bytes,
    request_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The MESSAGE event of one frame: text as is, binary base64-encoded."""
    context = _request_context(
        info,
        route_key=route_key,
        event_type="MESSAGE",
        request_id=request_id,
        now=now,
        identity={"sourceIp": info.source_ip},
    )
    context["messageId"] = new_request_id()
    if isinstance(data, bytes):
        body, is_base64 = base64.b64encode(data).decode("ascii"), True
    else:
        body, is_base64 = data, False
    return {"requestContext": context, "body": body, "isBase64Encoded": is_base64}


def build_disconnect_event(
    info: ConnectionInfo, *, status_code: int, reason: str, request_id: str, now: datetime
) -> dict[str, Any]:
    """The DISCONNECT event. API Gateway sends these placeholder headers, not the client's."""
    headers = {"Host": info.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    context = _request_context(
        info,
        route_key=DISCONNECT,
        event_type="DISCONNECT",
        request_id=request_id,
        now=now,
        identity={"sourceIp": info.source_ip, "userAgent": info.user_agent},
    )
    context["disconnectStatusCode"] = status_code
    context["disconnectReason"] = reason
    return {
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "requestContext": context,
        "isBase64Encoded": False,
    }


def gateway_message(message: str, connection_id: str, request_id: str) -> dict[str, str]:
    """A message API Gateway sends on its own, e.g. {"message": "Internal server error", ...}."""
    return {"message": message, "connectionId": connection_id, "requestId": request_id}


def route_response(payload: bytes) -> str | bytes | None:
    """What a two-way route sends back for the Lambda response payload: the `body` of a proxy
    response (bytes when isBase64Encoded), a returned string as is, any other JSON value as its
    JSON text; nothing for null or an object without a body.

    Raises MalformedResponseError where API Gateway answers "Internal server error"."""
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise MalformedResponseError(f"response payload is not JSON: {exc}") from exc
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, Mapping):
        return payload.decode("utf-8")
    body = value.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise MalformedResponseError(f"body is a {type(body).__name__}, not a string")
    if value.get("isBase64Encoded") is True:
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise MalformedResponseError(f"body is not valid base64: {exc}") from exc
    return body


def connection_description(info: ConnectionInfo, last_active_at: datetime) -> dict[str, Any]:
    """GET @connections/{id}: the wire shape (botocore maps it to ConnectedAt, Identity, ...)."""
    return {
        "connectedAt": iso_time(info.connected_at),
        "identity": {"sourceIp": info.source_ip, "userAgent": info.user_agent},
        "lastActiveAt": iso_time(last_active_at),
    }
