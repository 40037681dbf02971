"""Hand-made hostile HTTP requests, sent byte for byte with http.client (header values as raw
bytes), on every route and at the WebSocket handshake."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from headrace.core import routes
from headrace.dev.model import DEV_MODEL_NAME

Header = tuple[str, str | bytes]
VOCABULARY_SIZE = 1536  # the dev model's (headrace/dev/model/build.py)
NESTING = 1100
MODEL_QUERY = f"?model_endpoint_name={DEV_MODEL_NAME}"
SUBMIT_ROUTES = (routes.COMPLETIONS_ASYNC, routes.COMPLETIONS_SYNC, routes.COMPLETIONS_STREAM)
SMALL_JOB = {"prompt": "The river", "max_new_tokens": 4}


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def send(
    base_url: str,
    method: str,
    path: str,
    headers: list[Header],
    body: bytes | None = None,
    *,
    timeout: float = 60.0,
) -> Answer:
    """One request on a fresh connection; Answer(None, body=why) if nothing came back. A 101
    (WebSocket upgrade) is returned without reading further."""
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders()
        if body:
            # The server may answer (413) before it has read everything.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(body)
        response = conn.getresponse()
        data = response.read() if response.status != 101 else b""
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, body=repr(e).encode())
    finally:
        conn.close()


def send_raw(base_url: str, request: bytes, *, timeout: float = 30.0) -> Answer:
    """Bytes no HTTP library will write (a NUL in a header, a space in a header name)."""
    parts = urllib.parse.urlsplit(base_url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout
        ) as sock:
            sock.sendall(request)
            response = http.client.HTTPResponse(sock)
            response.begin()
            data = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, body=repr(e).encode())


def unparsable_requests(api_key: str) -> list[tuple[str, bytes]]:
    """Requests an HTTP parser must refuse before any route sees them."""
    path = routes.COMPLETION.format(request_id=uuid.uuid4())
    key = f"x-api-key: {api_key}\r\n".encode()

    def get(target: str, *headers: bytes) -> bytes:
        return b"".join([f"GET {target} HTTP/1.1\r\nhost: fuzz\r\n".encode(), *headers, b"\r\n"])

    return [
        ("URL of 10 KB", get(path + "?x=" + "a" * 10_000, key)),
        ("request id of 10 KB", get(routes.COMPLETION.format(request_id="a" * 10_000), key)),
        ("header value of 10 KB", get(path, key, b"x-fuzz: " + b"b" * 10_000 + b"\r\n")),
        ("NUL in a header value", get(path, key, b"x-fuzz: a\x00b\r\n")),
        ("space in a header name", get(path, key, b"x fuzz: 1\r\n")),
        ("control byte in a header name", get(path, key, b"x-f\x01uzz: 1\r\n")),
        ("header line without a colon", get(path, key, b"x-fuzz\r\n")),
        ("NUL in the URL", get(path + "%00\x00", key)),
    ]


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def hostile_bodies() -> list[tuple[str, bytes]]:
    """(name, raw body) for the submit routes: huge numbers, a tiny top_p, a long prompt, deep
    nesting. Each is either a 4xx or a job that must succeed."""
    prompt = ("The river turns the wheel. " * 2400)[:64_000]

    def job(**fields: Any) -> bytes:
        return json.dumps({**SMALL_JOB, **fields}).encode()

    return [
        ("top_k 2**63-1", job(top_k=2**63 - 1, temperature=0.5)),
        ("top_k 2**64", job(top_k=2**64, temperature=0.5)),
        (f"top_k {VOCABULARY_SIZE + 1} (above the vocabulary)", job(top_k=VOCABULARY_SIZE + 1)),
        ("top_k 10**30", job(top_k=10**30, temperature=0.5)),
        ("top_p 5e-324", job(top_p=5e-324, temperature=0.5)),
        ("prompt of 64,000 bytes", job(prompt=prompt)),
        ("body nested 1,100 deep (array)", nested_array(NESTING).encode()),
        ("body nested 1,100 deep (object)", nested_object(NESTING).encode()),
        (
            "guided_json nested 1,100 deep",
            b'{"prompt": "x", "max_new_tokens": 4, "guided_json": '
            + nested_object(NESTING).encode()
            + b"}",
        ),
        (
            "prompt nested 1,100 deep",
            b'{"prompt": ' + nested_array(NESTING).encode() + b', "max_new_tokens": 4}',
        ),
        ("max_new_tokens 2**63", job(max_new_tokens=2**63)),
        ("temperature NaN", b'{"prompt": "x", "max_new_tokens": 4, "temperature": NaN}'),
        ("temperature Infinity", b'{"prompt": "x", "max_new_tokens": 4, "temperature": Infinity}'),
    ]


def bad_header_sets(api_key: str) -> list[tuple[str, list[Header]]]:
    """Headers with bytes that are not UTF-8 (Latin-1 and broken sequences)."""
    bad = b"\xff\xfe\xc3\x28\xe9"
    basic = base64.b64encode(bad + b":").decode()
    return [
        ("non-UTF-8 x-api-key", [("x-api-key", bad)]),
        ("valid key + non-UTF-8 byte", [("x-api-key", api_key.encode() + b"\xe9")]),
        ("non-UTF-8 other header", [("x-api-key", api_key), ("x-fuzz", bad)]),
        ("basic auth user not UTF-8", [("authorization", f"Basic {basic}")]),
        (
            "non-UTF-8 content-type",
            [("x-api-key", api_key), ("content-type", b"application/json; charset=\xff")],
        ),
    ]


def every_route() -> list[tuple[str, str, bytes | None]]:
    body = json.dumps(SMALL_JOB).encode()
    return [
        ("POST", routes.COMPLETIONS_ASYNC + MODEL_QUERY, body),
        ("POST", routes.COMPLETIONS_SYNC + MODEL_QUERY, body),
        ("POST", routes.COMPLETIONS_STREAM + MODEL_QUERY, body),
        ("GET", routes.COMPLETION.format(request_id=uuid.uuid4()), None),
        ("GET", routes.MODEL_ENDPOINTS, None),
        ("GET", routes.OPENAPI, None),
    ]
