"""POST /v1/llm/completions/{request_id}/retry."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import retries
from headrace.api.services import ApiServices


@endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    request_id = (event.path_parameters or {}).get("request_id", "")
    answer = retries.retry(services, owner=owner, request_id=request_id)
    return json_response(202, answer.model_dump(mode="json"), request_id)
