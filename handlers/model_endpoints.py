"""GET /v1/llm/model-endpoints: the model zoo and whether a worker serves each model."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import models
from headrace.api.services import ApiServices


@endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    endpoints = models.model_endpoints(services)
    return json_response(
        200,
        {
            "model_endpoints": [e.model_dump() for e in endpoints],
            "default_model": services.settings.default_model,
        },
    )
