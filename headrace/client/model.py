"""`Model`: model discovery as the LLM Engine client offers it (`Model.list()`,
`Model.get(name)`), against Headrace.

The answers are LLM Engine's model-endpoint fields where Headrace has a true value for them,
plus Headrace's own (`served`, `artifact`, `context_length`): `inference_framework` is
`"ctranslate2"`, which the LLM Engine client's own `Model` refuses, hence this one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from headrace.client._config import current_config
from headrace.client._http import request
from headrace.client.errors import BadRequestError
from headrace.core import contracts, routes


class GetLLMEndpointResponse(contracts.ModelEndpoint):
    """One model: `name`, `status` (`READY` while a worker serves it, else `NO_WORKER`),
    `inference_framework`, `context_length`, `artifact`, ..."""

    def json(self, **kwargs: Any) -> str:
        """The model as JSON, as the API sends it (null fields included, as LLM Engine's)."""
        return self.model_dump_json(**kwargs)


class ListLLMEndpointsResponse(BaseModel):
    """Every model of the zoo (`model_endpoints`, by name) and the `default_model`: what
    `GET /v1/llm/model-endpoints` answers (headrace.core.contracts.ModelEndpointsResponse)."""

    model_endpoints: list[GetLLMEndpointResponse]
    default_model: str

    def json(self, **kwargs: Any) -> str:
        return self.model_dump_json(**kwargs)


class Model:
    """Models, as `llmengine.Model`: `list` and `get` (creating, updating and deleting models
    is a deployment's job here: the zoo is a setting)."""

    @classmethod
    def list(cls) -> ListLLMEndpointsResponse:
        """Every model the deployment serves, and whether a worker serves each now."""
        _, answer = request(current_config(), "GET", routes.MODEL_ENDPOINTS)
        return ListLLMEndpointsResponse.model_validate(answer)

    @classmethod
    def get(cls, model: str) -> GetLLMEndpointResponse:
        """One model; `NotFoundError` if the deployment has no model of that name."""
        if not model:
            raise BadRequestError("model: field required", 400)
        path = routes.MODEL_ENDPOINT.format(model_endpoint_name=quote(model, safe=""))
        _, answer = request(current_config(), "GET", path)
        return GetLLMEndpointResponse.model_validate(answer)
