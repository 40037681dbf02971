"""Client errors, named as Scale's LLM Engine client names them.

Every error carries `status_code` (None when no HTTP answer came back) and `detail` (the
server's `{"detail": ...}`, or a description of what went wrong on the way).
"""

from __future__ import annotations

import json
from typing import Any


class HeadraceClientError(Exception):
    """Base of every error the Headrace client raises."""

    default_status: int | None = None

    def __init__(
        self, detail: str, status_code: int | None = None, *, request_id: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code if status_code is not None else self.default_status
        self.request_id = request_id
        # Seconds the server asked us to wait (Retry-After), when it said so.
        self.retry_after: float | None = None
        # The answer came from Headrace itself ({"detail": ...}), not from a proxy in front.
        self.from_api = False

    def __str__(self) -> str:
        return self.detail


class BadRequestError(HeadraceClientError):
    """400, 413 or 422: the request is invalid; do not retry it unchanged."""

    default_status = 400


class UnauthorizedError(HeadraceClientError):
    """401: no valid API key was sent."""

    default_status = 401


class NotFoundError(HeadraceClientError):
    """404: unknown model, unknown request, or another key's request."""

    default_status = 404


class RateLimitExceededError(HeadraceClientError):
    """429: too many requests; retried with backoff before this is raised."""

    default_status = 429


class ServerError(HeadraceClientError):
    """5xx, or a job that FAILED on the worker."""

    default_status = 500


class HeadraceConnectionError(HeadraceClientError):
    """No HTTP answer: the API could not be reached, or the connection broke."""

    def __init__(self, detail: str, *, refused: bool = False) -> None:
        super().__init__(detail)
        # Refused: the request never reached a server, so resending it cannot duplicate a job.
        self.refused = refused


class CompletionTimeoutError(HeadraceClientError, TimeoutError):
    """The job did not finish within `timeout`; poll `request_id` later if it is set."""


_BY_STATUS: dict[int, type[HeadraceClientError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitExceededError,
}


def error_class(status_code: int) -> type[HeadraceClientError]:
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, HeadraceClientError)


def error_from_response(
    status_code: int,
    body: bytes | str | Any,
    *,
    retry_after: str | None = None,
    request_id: str | None = None,
) -> HeadraceClientError:
    """The error for an HTTP answer: its class from the status, its detail from the body."""
    payload: Any = body
    if isinstance(body, bytes | str):
        try:
            payload = json.loads(body)
        except ValueError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            payload = text.strip()
    detail, from_api = _detail_of(payload)
    if not detail:
        detail = f"HTTP {status_code} with no detail"
    if isinstance(payload, dict) and request_id is None:
        found = payload.get("request_id")
        request_id = found if isinstance(found, str) else None
    error = error_class(status_code)(detail, status_code, request_id=request_id)
    error.from_api = from_api
    error.retry_after = _seconds(retry_after)
    return error


def job_failed_error(request_id: str, error: Any) -> HeadraceClientError:
    """The error for a job that ended FAILED (its `error` is {"message", "type"}).

    Type "invalid_request" is the request's fault, found by the worker (its prompt and
    max_new_tokens overflow the model's context): a BadRequestError. Any other is the server's.
    """
    message, error_type = "the job failed", None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        error_type = error.get("type")
    elif error is not None:
        message = str(getattr(error, "message", message))
        error_type = getattr(error, "type", None)
    if error_type == "invalid_request":
        return BadRequestError(message, 400, request_id=request_id)
    return ServerError(message, 500, request_id=request_id)


def _detail_of(payload: Any) -> tuple[str, bool]:
    if isinstance(payload, dict):
        if "detail" in payload:
            detail = payload["detail"]
            return (detail if isinstance(detail, str) else json.dumps(detail)), True
        # API Gateway's own answers: {"message": "Not Found"}.
        if isinstance(payload.get("message"), str):
            return str(payload["message"]), False
        return json.dumps(payload), False
    return (str(payload) if payload is not None else ""), False


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return max(seconds, 0.0)
