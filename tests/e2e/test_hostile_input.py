"""Hostile requests over the wire against the local stack: bytes that are not UTF-8 in headers,
odd paths, bodies over the limit. Each gets its documented 4xx, as JSON `{"detail": ...}`."""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack

QUERY = f"?model_endpoint_name={DEV_MODEL_NAME}"
GOOD = json.dumps({"prompt": "The river", "max_new_tokens": 3, "temperature": 0}).encode()
# Every HTTP route Headrace serves, the streaming one included: (method, path, body) and the
# status it answers a request with a good key (an unknown request id: 404).
ROUTES = {
    "endpoints": ("GET", "/v1/llm/model-endpoints", None, 200),
    "async": ("POST", "/v1/llm/completions-async" + QUERY, GOOD, 202),
    "sync": ("POST", "/v1/llm/completions-sync" + QUERY, GOOD, 200),
    "status": ("GET", f"/v1/llm/completions/{uuid.uuid4()}", None, 404),
    "stream": ("POST", "/v1/llm/completions-stream" + QUERY, GOOD, 200),
}
NOT_UTF8 = b"caf\xe9"  # Latin-1 for "café": the 0xE9 byte alone is not UTF-8


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        assert self.content_type.startswith("application/json"), (self.status, self.body)
        return json.loads(self.body)


def send(
    stack: LocalStack,
    method: str,
    path: str,
    headers: list[tuple[str, bytes]],
    body: bytes | None = None,
) -> Answer:
    """One request whose header values go on the wire byte for byte (http.client sends bytes
    values as they are)."""
    url = urlsplit(stack.base_url)
    assert url.hostname and url.port
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Type", b"application/json")
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)).encode())
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.getheader("content-type") or "", response.read())
    finally:
        conn.close()


def upgrade_headers() -> list[tuple[str, bytes]]:
    key = base64.b64encode(b"0123456789abcdef")
    return [
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", b"13"),
    ]


# --- 1. bytes that are not UTF-8 in a header


@pytest.mark.parametrize("route", ROUTES)
def test_an_api_key_with_a_byte_that_is_not_utf8_is_an_unknown_key(
    stack: LocalStack, route: str
) -> None:
    method, path, body, _ = ROUTES[route]
    answer = send(stack, method, path, [("x-api-key", NOT_UTF8)], body)
    assert answer.status == 401, answer
    assert answer.json() == {"detail": "unknown API key"}


def test_the_websocket_handshake_refuses_such_a_key_with_401(stack: LocalStack) -> None:
    answer = send(stack, "GET", "/ws", [("x-api-key", NOT_UTF8), *upgrade_headers()])
    assert answer.status == 401, answer
    assert answer.json()["error"]["content"]["error"] == "unknown API key"


@pytest.mark.parametrize("route", ROUTES)
def test_a_user_agent_with_a_byte_that_is_not_utf8_is_just_a_user_agent(
    stack: LocalStack, route: str
) -> None:
    method, path, body, status = ROUTES[route]
    headers = [("x-api-key", stack.api_key.encode()), ("User-Agent", NOT_UTF8)]
    answer = send(stack, method, path, headers, body)
    assert answer.status == status, answer
    if route == "stream":
        assert b'"finished": true' in answer.body, answer
    else:
        assert answer.json()


@pytest.mark.parametrize(
    "credentials",
    [b"caf\xe9", base64.b64encode(NOT_UTF8 + b":"), b"not base64!"],
    ids=["raw-byte", "base64-of-latin1", "not-base64"],
)
@pytest.mark.parametrize("route", ROUTES)
def test_basic_credentials_that_are_not_base64_of_utf8_are_a_401_saying_so(
    stack: LocalStack, route: str, credentials: bytes
) -> None:
    method, path, body, _ = ROUTES[route]
    answer = send(stack, method, path, [("Authorization", b"Basic " + credentials)], body)
    assert answer.status == 401, answer
    assert answer.json()["detail"].startswith("authorization: basic credentials"), answer


# --- 4. every error Headrace answers is JSON {"detail": ...}


@pytest.mark.parametrize("escaped", ["%0A", "%0D%0A", "%00", "%E9"])
def test_a_request_id_with_an_escaped_odd_byte_is_a_json_404(
    stack: LocalStack, escaped: str
) -> None:
    path = f"/v1/llm/completions/abc{escaped}def"
    answer = send(stack, "GET", path, [("x-api-key", stack.api_key.encode())])
    assert answer.status == 404, answer
    assert answer.json()["detail"].startswith("request 'abc"), answer


def test_a_streaming_body_over_10_mb_is_a_json_413(stack: LocalStack) -> None:
    body = b'{"prompt": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    path = "/v1/llm/completions-stream" + QUERY
    answer = send(stack, "POST", path, [("x-api-key", stack.api_key.encode())], body)
    assert answer.status == 413, answer
    assert answer.json() == {"detail": "body: over the 10 MB payload limit"}
