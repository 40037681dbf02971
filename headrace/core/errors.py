"""One small exception hierarchy; the HTTP and worker boundaries translate it."""

from __future__ import annotations


class HeadraceError(Exception):
    """Base of every error Headrace raises on purpose. `status_code` is what HTTP answers."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequest(HeadraceError):
    status_code = 400


class Unauthorized(HeadraceError):
    status_code = 401


class NotFound(HeadraceError):
    status_code = 404


class Gone(HeadraceError):
    """The other end is gone for good (a closed WebSocket connection answers 410)."""

    status_code = 410


class Conflict(HeadraceError):
    status_code = 409


class PayloadTooLarge(HeadraceError):
    status_code = 413


class UnprocessableBody(HeadraceError):
    """The body is not JSON at all (LLM Engine answers 422 for this)."""

    status_code = 422


class Throttled(HeadraceError):
    status_code = 429


class TransientError(HeadraceError):
    """A dependency failed in a way worth retrying (throttling, timeouts, 5xx)."""

    status_code = 503


class ConditionFailed(HeadraceError):
    """A conditional write lost: the item was not in the state the write expected.

    `failed`: of a transaction, the indexes of the actions whose condition failed."""

    status_code = 409

    def __init__(self, detail: str, failed: tuple[int, ...] = ()) -> None:
        super().__init__(detail)
        self.failed = failed


class ModelLoadError(HeadraceError):
    """The worker could not fetch or load a model; it must not start serving."""
