"""GET /v1/llm/completions/{request_id}."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import capacity, completions
from headrace.api.services import ApiServices


@endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    request_id = (event.path_parameters or {}).get("request_id", "")
    record = completions.get_job(services, owner=owner, request_id=request_id)
    view = capacity.job_view(services, record)
    return json_response(200, view.model_dump(mode="json", exclude_none=True), request_id)
