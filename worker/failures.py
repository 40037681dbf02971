"""Why the scheduler could not decode a job: the consumer ends the job accordingly."""

from __future__ import annotations

from headrace.core.errors import HeadraceError


class DecodeFailed(HeadraceError):
    """The engine failed on a batch (not the request's fault as far as we can tell)."""


class RequestRefused(DecodeFailed):
    """The request cannot run on this model (JobError type "invalid_request"): every attempt
    would refuse it alike, so it fails at once, before it takes a place in a batch."""

    status_code = 400
