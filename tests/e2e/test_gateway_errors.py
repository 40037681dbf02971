"""What the local gateway answers itself, as API Gateway does: no route, a function that fails
or times out, a body over the limit; and its request log."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from headrace.dev.gateway import MAX_BODY_BYTES, LocalGateway
from tests.e2e.gateway_support import RunningGateway, echo, toy_gateway
from tests.suites.fuzz.http_cases import send_raw, unparsable_requests
from tests.toy_gateway import TOY, toy_resolver, toy_routes


@pytest.fixture(scope="module")
def gw() -> Iterator[RunningGateway]:
    with RunningGateway(toy_gateway()) as running:
        yield running


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


@pytest.mark.parametrize(("case", "raw"), unparsable_requests("some-key"))
def test_a_request_http_cannot_parse_is_a_json_400_in_one_log_line(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture, case: str, raw: bytes
) -> None:
    caplog.set_level(logging.INFO)
    answer = send_raw(gw.base_url, raw)
    assert answer.status == 400, (case, answer)
    assert answer.headers["content-type"].startswith("application/json")
    detail = json.loads(answer.body)["detail"]
    assert detail.startswith("malformed HTTP request: ") and len(detail) < 300
    assert "Traceback" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.name == "headrace.gateway"] == [
        f"unparsable request answered 400: {detail}"
    ]
