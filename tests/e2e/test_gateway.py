"""The local gateway over real HTTP on loopback, in front of the toy handlers of a toy template."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import importlib.util
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from headrace.dev.gateway import MAX_BODY_BYTES, LocalGateway, import_handler
from headrace.dev.routes import RouteTable
from infra.template import HttpRoute, http_routes, load_template

FIXTURES = Path(__file__).parent / "gateway_fixtures"
TEMPLATE = FIXTURES / "template.yaml"


def _load_toy_handlers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("toy_handlers", FIXTURES / "toy_handlers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOY = _load_toy_handlers()


def toy_resolver(handler: str) -> Any:
    module, _, name = handler.rpartition(".")
    assert module == "toy_handlers"
    return getattr(TOY, name)


def toy_routes(**timeouts: float) -> list[HttpRoute]:
    """The toy template's routes, with Timeout overridden per function logical id."""
    return [
        dataclasses.replace(
            r, timeout_seconds=timeouts.get(r.function_logical_id, r.timeout_seconds)
        )
        for r in http_routes(load_template(TEMPLATE))
    ]


class RunningGateway:
    """A gateway serving from its own event loop in a background thread, for sync tests."""

    def __init__(self, gateway: LocalGateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningGateway:
        self.thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self.gateway.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] = (),
        chunked: bool = False,
    ) -> Response:
        url = urlsplit(self.base_url)
        assert url.hostname and url.port
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders(iter([body or b""]), encode_chunked=True)
            else:
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response({"openapi": "3.1.0"})


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    extra = [web.get("/openapi.json", openapi)]
    gateway = LocalGateway.from_template(TEMPLATE, resolver=toy_resolver, extra_routes=extra)
    with RunningGateway(gateway) as running:
        yield running


def echo(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    resp = gw.request(method, path, **kwargs)
    assert resp.status == 200, resp.body
    assert resp.header("x-echo") == "yes"
    result: dict[str, Any] = resp.json()
    assert result["event"]["requestContext"]["requestId"] == resp.header("apigw-requestid")
    return result


# --- the event


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


# --- the response


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


# --- what API Gateway answers itself


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v1/things"),  # the path exists for POST only
        ("POST", "/v1/things/abc"),
        ("GET", "/v1/things/abc/more"),
        ("GET", "/v1/things/"),
        ("POST", "/openapi.json"),  # an extra route, GET only
    ],
)
def test_no_route_is_404(gw: RunningGateway, method: str, path: str) -> None:
    resp = gw.request(method, path, body=b"{}" if method == "POST" else None)
    assert resp.status == 404
    assert resp.header("content-type") == "application/json"
    assert resp.json() == {"message": "Not Found"}


def test_extra_routes(gw: RunningGateway) -> None:
    resp = gw.request("GET", "/openapi.json")
    assert resp.status == 200
    assert resp.json() == {"openapi": "3.1.0"}


@pytest.mark.parametrize("query", ["", "?exc=timeout"])
def test_handler_exception_is_500_without_details(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    caplog.set_level(logging.INFO, logger="headrace.gateway")
    resp = gw.request("GET", f"/v1/boom{query}")
    assert resp.status == 500  # a TimeoutError of the handler's own is no gateway timeout
    assert resp.json() == {"message": "Internal Server Error"}
    assert TOY.SECRET.encode() not in resp.body and b"Traceback" not in resp.body
    errors = [r for r in caplog.records if r.name == "headrace.gateway" and r.exc_info]
    assert errors and TOY.SECRET in caplog.text and "Traceback" in caplog.text


def test_one_json_log_line_per_request(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="headrace.gateway")
    resp = gw.request("GET", "/v1/things/logged")
    lines = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "headrace.gateway" and r.getMessage().startswith("{")
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["path"] == "/v1/things/logged"
    assert line["status"] == 200 and line["ms"] >= 0
    assert line["requestId"] == resp.header("apigw-requestid")


def test_body_over_limit_is_413() -> None:
    gateway = LocalGateway(toy_routes(), resolver=toy_resolver, max_body_bytes=1024)
    with RunningGateway(gateway) as gw:
        assert echo(gw, "POST", "/v1/things", body=b"x" * 1024)["event"]["body"]
        for chunked in (False, True):
            resp = gw.request("POST", "/v1/things", body=b"x" * 1025, chunked=chunked)
            assert resp.status == 413
            assert resp.json() == {"message": "Request Entity Too Large"}
    assert LocalGateway([]).max_body_bytes == MAX_BODY_BYTES == 10 * 1024 * 1024


def test_integration_timeout_is_503() -> None:
    gateway = LocalGateway(toy_routes(), resolver=toy_resolver, integration_timeout_seconds=0.2)
    with RunningGateway(gateway) as gw:
        started = time.monotonic()
        resp = gw.request("GET", "/v1/slow?seconds=1.0")
        assert time.monotonic() - started < 0.9
        assert resp.status == 503
        assert resp.json() == {"message": "Service Unavailable"}


def test_function_timeout_is_500() -> None:
    gateway = LocalGateway(toy_routes(SlowFunction=0.2), resolver=toy_resolver)
    with RunningGateway(gateway) as gw:
        started = time.monotonic()
        resp = gw.request("GET", "/v1/slow?seconds=1.0")
        assert time.monotonic() - started < 0.9
        assert resp.status == 500  # Lambda's "Task timed out" is a function error
        assert resp.json() == {"message": "Internal Server Error"}


def test_handlers_run_concurrently(gw: RunningGateway) -> None:
    results: list[int] = []

    def call() -> None:
        results.append(gw.request("GET", "/v1/slow?seconds=0.5").status)

    threads = [threading.Thread(target=call) for _ in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 0.9
    assert results == [200, 200]


# --- pieces


def test_from_template_reads_routes_and_memory() -> None:
    gateway = LocalGateway.from_template(TEMPLATE, resolver=toy_resolver)
    keys = {f"{r.method} {r.path}" for r in gateway.routes.routes}
    assert "ANY /files/{proxy+}" in keys and "GET /v1/slow" in keys
    assert {r.function_logical_id: r.timeout_seconds for r in gateway.routes.routes}[
        "SlowFunction"
    ] == 5.0
    gateway.resolve_all()


def test_import_handler() -> None:
    func: object = import_handler("json.dumps")
    assert func is json.dumps
    with pytest.raises(ValueError):
        import_handler("nodots")


def test_route_table_rules() -> None:
    def route(method: str, path: str) -> HttpRoute:
        return HttpRoute(method, path, "m.f", "F", 3.0)

    table = RouteTable([route("GET", "/a/{x}"), route("ANY", "/a/b"), route("GET", "/a/{proxy+}")])
    match = table.match("GET", "/a/b")
    assert match is not None and match.route_key == "ANY /a/b"
    match = table.match("GET", "/a/b/c")
    assert match is not None and match.path_parameters == {"proxy": "b/c"}
    assert table.match("POST", "/a/c") is None
    with pytest.raises(ValueError):
        RouteTable([route("GET", "/a/{proxy+}/b")])
    with pytest.raises(ValueError):
        RouteTable([route("GET", "/a"), route("GET", "/a")])
