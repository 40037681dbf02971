"""POST /v1/llm/completions/{request_id}/cancel."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import job_control
from headrace.api.services import ApiServices


@endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    request_id = (event.path_parameters or {}).get("request_id", "")
    answer = job_control.cancel(services, owner=owner, request_id=request_id)
    # 200: cancelled now (it had not started); 202: accepted, the job is stopping.
    status = 202 if answer.cancelling else 200
    return json_response(status, answer.model_dump(mode="json"), request_id)
