"""GET /v1/llm/model-endpoints and GET /v1/llm/model-endpoints/{model_endpoint_name}: the model
zoo in LLM Engine's model-endpoint shape, and whether a worker serves each model."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import models
from headrace.api.services import ApiServices
from headrace.core.contracts import ModelEndpointsResponse


@endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    listing = ModelEndpointsResponse(
        model_endpoints=models.model_endpoints(services),
        default_model=services.settings.default_model,
    )
    return json_response(200, listing.model_dump(mode="json"))


@endpoint
def handle_get(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    name = (event.path_parameters or {}).get("model_endpoint_name", "")
    return json_response(200, models.model_endpoint(services, name).model_dump(mode="json"))
