"""API Gateway HTTP API semantics (payload format 2.0), free of any web framework.

The Lambda event built from a request, and how a Lambda response payload turns into an HTTP
response: https://docs.aws.amazon.com/apigateway/latest/developerguide/
http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from headrace.dev.lambda_context import ACCOUNT_ID
from headrace.dev.routes import RouteMatch

API_ID = "local"
# Bodies of these types reach the function as text; every other type (a missing Content-Type and
# application/x-www-form-urlencoded included) arrives base64-encoded, as HTTP APIs do.
TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
# Request headers HTTP APIs do not pass on in `headers` (cookies go to `cookies`).
_DROPPED_REQUEST_HEADERS = frozenset({"cookie", "connection", "keep-alive", "transfer-encoding"})
# Response headers the gateway computes itself.
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ID_ALPHABET = string.ascii_letters + string.digits


class MalformedResponseError(ValueError):
    """The function's response is not one API Gateway can turn into HTTP (it answers 500)."""


def wire_text(text: str) -> str:
    """`text` as a JSON event can carry it: UTF-8 only.

    aiohttp keeps the bytes of a header, path or query that are not UTF-8 as lone surrogates
    (`surrogateescape`); they cannot be encoded, so every event, header lookup and log line
    that met one failed (a plain-text 500). They become U+FFFD, the replacement character:
    a key with such a byte is then an unknown key (401), a user agent just an odd one.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate no byte escapes to (e.g. from a %-escape)
        return text.encode("utf-8", "replace").decode("utf-8")


def forwarding_headers(
    headers: Iterable[tuple[str, str]], *, source_ip: str, port: int | None, scheme: str
) -> list[tuple[str, str]]:
    """The request's headers plus the ones API Gateway adds on the way to the function."""
    headers = list(headers)
    out = [(name, value) for name, value in headers if name.lower() != "x-forwarded-for"]
    names = {name.lower() for name, _ in out}
    forwarded = [value for name, value in headers if name.lower() == "x-forwarded-for"]
    out.append(("x-forwarded-for", ", ".join([*forwarded, source_ip])))
    if "x-forwarded-port" not in names and port is not None:
        out.append(("x-forwarded-port", str(port)))
    if "x-forwarded-proto" not in names:
        out.append(("x-forwarded-proto", scheme))
    if "x-amzn-trace-id" not in names:
        trace_id = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"
        out.append(("x-amzn-trace-id", trace_id))
    return out


def new_request_id() -> str:
    """An id shaped like API Gateway's (`apigw-requestid` header, requestContext.requestId)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15)) + "="


def clf_time(now: datetime) -> str:
    """requestContext.time, e.g. "12/Mar/2020:19:03:58 +0000" (locale independent)."""
    now = now.astimezone(UTC)
    return f"{now.day:02d}/{_MONTHS[now.month - 1]}/{now.year}:{now:%H:%M:%S} +0000"


def is_text_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_MEDIA_TYPES


def encode_body(body: bytes, content_type: str | None) -> tuple[str | None, bool]:
    """(event body, isBase64Encoded). No body at all: (None, False), the `body` key left out."""
    if not body:
        return None, False
    if is_text_media_type(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def build_event(
    *,
    match: RouteMatch,
    method: str,
    path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    request_id: str,
    now: datetime,
    protocol: str = "HTTP/1.1",
) -> dict[str, Any]:
    """The payload-format-2.0 event for one request. `path` is the URL-decoded path (HTTP APIs
    decode `rawPath`); `raw_query` is the query string as sent, without the '?'."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if lname == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        if lname in _DROPPED_REQUEST_HEADERS:
            continue
        joined[lname] = f"{joined[lname]},{value}" if lname in joined else value

    if body and "content-length" not in joined:  # a chunked request arrives with its length
        joined["content-length"] = str(len(body))

    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value

    host = joined.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    body_text, is_base64 = encode_body(body, joined.get("content-type"))

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": match.route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": hostname.split(".", 1)[0],
        "http": {
            "method": method,
            "path": path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": match.route_key,
        "stage": "$default",
        "time": clf_time(now),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if body_text is not None:
        event["body"] = body_text
    if match.path_parameters:
        event["pathParameters"] = dict(match.path_parameters)
    event["isBase64Encoded"] = is_base64
    return event


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def message_response(status: int, message: str) -> HttpResponse:
    """API Gateway's own answers: `{"message": "Not Found"}` and the like."""
    body = json.dumps({"message": message}).encode()
    return HttpResponse(status, [("content-type", "application/json")], body)


NOT_FOUND = message_response(404, "Not Found")
TOO_LARGE = message_response(413, "Request Entity Too Large")
INTERNAL_ERROR = message_response(500, "Internal Server Error")
UNAVAILABLE = message_response(503, "Service Unavailable")


def _header_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise MalformedResponseError(f"header {name!r} has a {type(value).__name__} value")


def _status(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise MalformedResponseError(f"statusCode {value!r} is not an HTTP status")
    return value


def map_response(payload: bytes) -> HttpResponse:
    """Turn a Lambda response payload (JSON bytes) into the HTTP response API Gateway sends.

    An object with `statusCode` is a proxy response; anything else is a body of its own, sent as
    200 application/json. Raises MalformedResponseError where API Gateway answers 500.
    """
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise MalformedResponseError(f"response payload is not JSON: {exc}") from exc
    if not isinstance(value, dict) or "statusCode" not in value:
        return HttpResponse(200, [("content-type", "application/json")], payload)

    status = _status(value["statusCode"])
    headers: list[tuple[str, str]] = []
    raw_headers = value.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise MalformedResponseError("headers is not an object")
    for name, header in raw_headers.items():
        if name.lower() not in _DROPPED_RESPONSE_HEADERS:
            headers.append((name, _header_value(name, header)))
    cookies = value.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
        raise MalformedResponseError("cookies is not a list of strings")
    headers.extend(("Set-Cookie", cookie) for cookie in cookies)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "text/plain; charset=utf-8"))

    body = value.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise MalformedResponseError(f"body is a {type(body).__name__}, not a string")
    elif value.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise MalformedResponseError(f"body is not valid base64: {exc}") from exc
    else:
        data = body.encode("utf-8")
    return HttpResponse(status, headers, data)
