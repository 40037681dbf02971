"""The client's error mapping, retry rules and failed-job errors, on synthetic answers."""

from __future__ import annotations

import pytest

from headrace import (
    BadRequestError,
    HeadraceClientError,
    HeadraceConnectionError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    UnauthorizedError,
)
from headrace.client._http import should_retry
from headrace.client._jobs import result_of
from headrace.client.errors import error_from_response
from headrace.core.contracts import JobView


@pytest.mark.parametrize(
    ("status", "body", "error", "detail"),
    [
        (400, b'{"detail": "top_k: bad"}', BadRequestError, "top_k: bad"),
        (401, b'{"detail": "unknown API key"}', UnauthorizedError, "unknown API key"),
        (404, b'{"detail": "nope"}', NotFoundError, "nope"),
        (413, b'{"message": "Request Entity Too Large"}', BadRequestError, "Request Entity"),
        (422, b'{"detail": "body: not valid JSON"}', BadRequestError, "body: not valid JSON"),
        (429, b'{"detail": "slow down"}', RateLimitExceededError, "slow down"),
        (500, b"Internal Server Error", ServerError, "Internal Server Error"),
        (503, b'{"message": "Service Unavailable"}', ServerError, "Service Unavailable"),
        (409, b"", HeadraceClientError, "HTTP 409 with no detail"),
    ],
)
def test_error_mapping(status: int, body: bytes, error: type[Exception], detail: str) -> None:
    mapped = error_from_response(status, body, retry_after="2")
    assert type(mapped) is error
    assert mapped.status_code == status and mapped.detail.startswith(detail)
    assert mapped.retry_after == 2.0


def test_only_safe_requests_are_retried() -> None:
    throttled = error_from_response(429, b'{"detail": "slow down"}')
    ours_503 = error_from_response(503, b'{"detail": "could not enqueue the job"}')
    gateway_503 = error_from_response(503, b'{"message": "Service Unavailable"}')
    refused = HeadraceConnectionError("refused", refused=True)
    broken = HeadraceConnectionError("reset mid-answer")
    assert should_retry(throttled, idempotent=False)
    assert should_retry(ours_503, idempotent=False)  # the job was marked FAILED, not queued
    assert not should_retry(gateway_503, idempotent=False)  # the job may exist: no duplicate
    assert should_retry(gateway_503, idempotent=True)
    assert should_retry(refused, idempotent=False) and not should_retry(broken, idempotent=False)
    assert should_retry(broken, idempotent=True)
    assert not should_retry(error_from_response(400, b"{}"), idempotent=True)


def job(status: str, **fields: object) -> JobView:
    return JobView.model_validate(
        {"request_id": "r", "status": status, "model": "m", "attempts": 1, "created_at": "t",
         **fields}
    )  # fmt: skip


def test_a_failed_job_raises_its_reason() -> None:
    with pytest.raises(ServerError, match="engine exploded") as caught:
        result_of(job("FAILED", error={"message": "engine exploded", "type": "decode_failed"}), 1)
    assert caught.value.request_id == "r"
    with pytest.raises(TimeoutError, match=r"Completion\.get"):
        result_of(job("RUNNING"), 1)
