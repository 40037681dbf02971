"""The local gateway over real HTTP on loopback, in front of the toy handlers of a toy template:
the payload-2.0 event it builds (shaped like tests/events' samples for template.yaml's routes),
and the HTTP response it makes of a function's answer. (What it answers itself:
test_gateway_errors.py.)"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from headrace.dev.gateway import LocalGateway
from tests.e2e.gateway_support import Response, RunningGateway, echo, toy_gateway
from tests.events import HTTP_EVENTS, load_event, shape
from tests.toy_gateway import TOY


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with RunningGateway(toy_gateway()) as running:
        yield running


# --- the event ------------------------------------------------------------------------------------


def test_event_is_payload_format_2(gw: RunningGateway) -> None:
    before_ms = time.time() * 1000
    result = echo(
        gw,
        "POST",
        "/v1/things?a=1&a=2&b=x%20y&empty=",
        body=b'{"k": "v"}',
        headers=[
            ("Content-Type", "application/json"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("User-Agent", "toy-agent/1.0"),
            ("Cookie", "c1=v1; c2=v2"),
        ],
    )
    event, context = result["event"], result["context"]
    port = urlsplit(gw.base_url).port

    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /v1/things"
    assert event["rawPath"] == "/v1/things"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y&empty="
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y", "empty": ""}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    headers = event["headers"]
    assert all(name == name.lower() for name in headers)
    assert headers["x-custom"] == "one,two"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{port}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-amzn-trace-id"].startswith("Root=1-")
    assert "cookie" not in headers
    assert event["body"] == '{"k": "v"}'
    assert event["isBase64Encoded"] is False
    assert "pathParameters" not in event
    assert "stageVariables" not in event

    ctx = event["requestContext"]
    assert ctx["accountId"] == "123456789012"
    assert ctx["apiId"] == "local"
    assert ctx["domainName"] == f"127.0.0.1:{port}"
    assert ctx["domainPrefix"] == "127"
    assert ctx["http"] == {
        "method": "POST",
        "path": "/v1/things",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "toy-agent/1.0",
    }
    assert ctx["routeKey"] == "POST /v1/things"
    assert ctx["stage"] == "$default"
    assert re.fullmatch(r"\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000", ctx["time"])
    assert before_ms - 1000 <= ctx["timeEpoch"] <= time.time() * 1000 + 1000

    assert context["function_name"] == "EchoFunction"
    assert context["function_version"] == "$LATEST"
    assert context["memory_limit_in_mb"] == "256"  # Globals MemorySize, a string as in Lambda
    assert context["invoked_function_arn"].endswith(":123456789012:function:EchoFunction")
    assert context["log_group_name"] == "/aws/lambda/EchoFunction"
    assert 0 < context["remaining_ms"] <= 10_000  # Globals Timeout
    uuid.UUID(context["aws_request_id"])


def test_request_ids_are_unique(gw: RunningGateway) -> None:
    ids = {
        echo(gw, "GET", "/v1/things/x")["event"]["requestContext"]["requestId"] for _ in range(5)
    }
    assert len(ids) == 5


def test_path_parameters_and_no_body(gw: RunningGateway) -> None:
    event = echo(gw, "GET", "/v1/things/abc")["event"]
    assert event["routeKey"] == "GET /v1/things/{thing_id}"
    assert event["pathParameters"] == {"thing_id": "abc"}
    assert event["rawQueryString"] == ""
    for absent in ("body", "queryStringParameters", "cookies"):
        assert absent not in event
    assert event["isBase64Encoded"] is False

    decoded = echo(gw, "GET", "/v1/things/a%20b")["event"]
    assert decoded["pathParameters"] == {"thing_id": "a b"}
    assert decoded["rawPath"] == "/v1/things/a b"  # HTTP APIs hand on the decoded path


def test_static_route_beats_parameter(gw: RunningGateway) -> None:
    event = echo(gw, "GET", "/v1/things/special")["event"]
    assert event["routeKey"] == "GET /v1/things/special"
    assert "pathParameters" not in event


def test_greedy_proxy_route_with_any_method(gw: RunningGateway) -> None:
    event = echo(gw, "DELETE", "/files/a/b/c.txt")["event"]
    assert event["routeKey"] == "ANY /files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b/c.txt"}
    assert event["requestContext"]["http"]["method"] == "DELETE"
    assert gw.request("GET", "/files/").status == 404


@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/octet-stream", bytes(range(256)), True),
        ("text/plain", b"\xff\xfe not utf-8", True),
        (None, b"plain ascii", True),  # HTTP APIs base64 a body without Content-Type
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),
        ("text/plain; charset=utf-8", "héllo".encode(), False),
        ("application/json; charset=utf-8", b'{"a": 1}', False),
    ],
)
def test_body_encoding(
    gw: RunningGateway, content_type: str | None, body: bytes, encoded: bool
) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    event = echo(gw, "POST", "/v1/things", body=body, headers=headers)["event"]
    assert event["isBase64Encoded"] is encoded
    got = base64.b64decode(event["body"]) if encoded else event["body"].encode()
    assert got == body


def test_chunked_request_body(gw: RunningGateway) -> None:
    headers = [("Content-Type", "application/json")]
    event = echo(gw, "POST", "/v1/things", body=b'{"x": 1}', headers=headers, chunked=True)
    assert event["event"]["body"] == '{"x": 1}'
    assert event["event"]["headers"]["content-length"] == "8"
    assert "transfer-encoding" not in event["event"]["headers"]


@pytest.fixture(scope="module")
def echoing_api() -> Iterator[RunningGateway]:
    """The routes of template.yaml, every one served by the toy echo handler."""
    with RunningGateway(LocalGateway.from_template(resolver=lambda handler: TOY.echo)) as running:
        yield running


@pytest.mark.parametrize("route_key", HTTP_EVENTS)
def test_the_events_of_our_routes_are_shaped_as_api_gateway_sends_them(
    echoing_api: RunningGateway, route_key: str
) -> None:
    """The request of each sample event, sent to the gateway: the event the handler gets has the
    sample's keys, recursively, with the same value types."""
    sample = load_event(HTTP_EVENTS[route_key])
    sent = ("accept", "content-type", "user-agent", "x-api-key")
    headers = [(name, value) for name, value in sample["headers"].items() if name in sent]
    query = sample["rawQueryString"]
    event = echo(
        echoing_api,
        sample["requestContext"]["http"]["method"],
        sample["rawPath"] + (f"?{query}" if query else ""),
        body=sample["body"].encode() if "body" in sample else None,
        headers=headers,
    )["event"]
    assert event["routeKey"] == route_key
    assert shape(event) == shape(sample)


# --- the response ---------------------------------------------------------------------------------


def respond(gw: RunningGateway, value: Any) -> Response:
    body = json.dumps(value).encode()
    return gw.request("POST", "/v1/respond", body, [("Content-Type", "application/json")])


def test_proxy_response_mapping(gw: RunningGateway) -> None:
    resp = respond(
        gw,
        {
            "statusCode": 201,
            "headers": {"X-A": "1", "Content-Type": "text/csv", "X-Num": 7},
            "multiValueHeaders": {"X-Ignored": ["a", "b"]},
            "cookies": ["s=1; Path=/", "t=2"],
            "body": "a,b",
        },
    )
    assert resp.status == 201
    assert resp.header("x-a") == "1"
    assert resp.header("x-num") == "7"
    assert resp.header("content-type") == "text/csv"
    assert resp.header("x-ignored") is None
    assert resp.headers_named("set-cookie") == ["s=1; Path=/", "t=2"]
    assert resp.header("apigw-requestid")
    assert resp.body == b"a,b"


def test_base64_response_body(gw: RunningGateway) -> None:
    data = bytes(range(256))
    resp = respond(
        gw,
        {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "isBase64Encoded": True,
            "body": base64.b64encode(data).decode(),
        },
    )
    assert resp.status == 200
    assert resp.body == data


def test_proxy_response_defaults(gw: RunningGateway) -> None:
    resp = respond(gw, {"statusCode": 404})
    assert resp.status == 404
    assert resp.body == b""
    assert resp.header("content-type") == "text/plain; charset=utf-8"
    assert respond(gw, {"statusCode": 204, "body": ""}).status == 204


@pytest.mark.parametrize("value", [{"message": "hi"}, [1, 2], "hello", 42, None, True])
def test_result_without_status_code_is_200_json(gw: RunningGateway, value: Any) -> None:
    resp = respond(gw, value)
    assert resp.status == 200
    assert resp.header("content-type") == "application/json"
    assert resp.json() == value


def test_decimals_are_marshalled_like_the_lambda_runtime(gw: RunningGateway) -> None:
    resp = gw.request("GET", "/v1/decimal")
    assert resp.status == 200
    assert resp.json() == {"n": 1.5, "i": 2}


@pytest.mark.parametrize(
    "value",
    [
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": "teapot"},
        {"statusCode": 200, "headers": {"x": ["a", "b"]}},
        {"statusCode": 200, "isBase64Encoded": True, "body": "%%%"},
        "unserializable",
    ],
)
def test_malformed_response_is_500(gw: RunningGateway, value: Any) -> None:
    resp = respond(gw, value)
    assert resp.status == 500
    assert resp.json() == {"message": "Internal Server Error"}
