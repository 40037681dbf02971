"""POST /v1/llm/completions-async and POST /v1/llm/completions-sync."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import completions, idempotency
from headrace.api.services import ApiServices
from headrace.core.contracts import JobStatus, parse_completion_request


def _submit(event: HttpApiEvent, services: ApiServices, owner: str) -> idempotency.Submission:
    key = idempotency.key_from_headers(event.headers)
    request = parse_completion_request(event.body_bytes())
    model = completions.resolve_model(services, request, event.query("model_endpoint_name"))
    return idempotency.submit(services, owner=owner, request=request, model=model, key=key)


@endpoint
def handle_async(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    # A repeated Idempotency-Key answers the first request's job, with its status now.
    submitted = _submit(event, services, owner)
    request_id = submitted.request_id
    body = {"request_id": request_id, "status": submitted.status.value}
    return json_response(202, body, request_id)


@endpoint
def handle_sync(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    request_id = _submit(event, services, owner).request_id
    record = completions.wait_for_final(
        services, owner=owner, request_id=request_id, timeout=services.settings.sync_wait_seconds
    )
    if record.status is JobStatus.SUCCEEDED:
        return json_response(200, {"request_id": request_id, "output": record.output}, request_id)
    if record.status is JobStatus.FAILED and record.error is not None:
        # The request's fault only where the worker alone could tell (JobErrorType).
        status = 400 if record.error.type == "invalid_request" else 500
        return json_response(
            status, {"detail": record.error.message, "request_id": request_id}, request_id
        )
    # Not done within the wait: the caller polls GET /v1/llm/completions/{request_id}.
    return json_response(202, {"request_id": request_id, "status": record.status.value}, request_id)
