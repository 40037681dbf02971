"""Model discovery against the real local stack: the list and get routes in LLM Engine's
model-endpoint shape, Headrace's `Model.list()`/`Model.get()`, and what Scale's LLM Engine client
makes of the same answers (its `Model` refuses them: the README says so, this checks it)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from headrace import Model, NotFoundError, UnauthorizedError
from headrace.client import GetLLMEndpointResponse, configure
from headrace.core import routes
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.support import Api

pytestmark = pytest.mark.usefixtures("isolated_config")

ONE = routes.MODEL_ENDPOINT.format(model_endpoint_name=DEV_MODEL_NAME)

# LLM Engine's model-endpoint fields with the values Headrace can vouch for; null: none.
LLM_ENGINE_FIELDS = {
    "id": None,
    "name": DEV_MODEL_NAME,
    "model_name": DEV_MODEL_NAME,
    "source": None,
    "status": "READY",
    "inference_framework": "ctranslate2",
    "inference_framework_tag": None,
    "num_shards": 1,
    "quantize": None,
    "spec": None,
}
HEADRACE_FIELDS = {"served", "artifact", "context_length"}


@pytest.fixture
def client(stack: LocalStack) -> LocalStack:
    configure(base_url=stack.base_url, api_key=stack.api_key)
    return stack


def test_the_list_has_llm_engines_fields_with_true_values(api: Api, stack: LocalStack) -> None:
    status, body = api.call("GET", routes.MODEL_ENDPOINTS)
    assert status == 200, body
    assert set(body) == {"model_endpoints", "default_model"}
    assert body["default_model"] == DEV_MODEL_NAME
    [endpoint] = body["model_endpoints"]
    assert set(endpoint) == set(LLM_ENGINE_FIELDS) | HEADRACE_FIELDS
    assert {k: endpoint[k] for k in LLM_ENGINE_FIELDS} == LLM_ENGINE_FIELDS
    assert endpoint["served"] is True  # the stack's worker announces the model
    assert endpoint["artifact"] == stack.model_zoo[DEV_MODEL_NAME]
    assert endpoint["context_length"] == 4096  # as the worker enforces it for the dev model


def test_get_answers_the_listed_model(api: Api) -> None:
    status, one = api.call("GET", ONE)
    assert status == 200, one
    _, listing = api.call("GET", routes.MODEL_ENDPOINTS)
    assert one == listing["model_endpoints"][0]


@pytest.mark.parametrize("name", ["nope", "headrace-tiny-2", "HEADRACE-TINY", "a%20b"])
def test_get_of_a_name_outside_the_zoo_is_404_with_a_detail(api: Api, name: str) -> None:
    status, body = api.call("GET", routes.MODEL_ENDPOINT.format(model_endpoint_name=name))
    assert status == 404
    assert set(body) == {"detail"} and body["detail"].startswith("model ")
    assert "GET /v1/llm/model-endpoints lists the models" in body["detail"]


@pytest.mark.parametrize("path", [routes.MODEL_ENDPOINTS, ONE, "/v1/llm/model-endpoints/nope"])
@pytest.mark.parametrize("key", [None, "hr-not-a-key"])
def test_both_routes_need_a_known_key(stack: LocalStack, path: str, key: str | None) -> None:
    status, body = Api(stack.base_url, key).call("GET", path)
    assert status == 401
    assert set(body) == {"detail"}


# ---- Headrace's client ------------------------------------------------------------------------


def test_model_list_and_get_with_headraces_client(client: LocalStack, api: Api) -> None:
    listing = Model.list()
    assert listing.default_model == DEV_MODEL_NAME
    [endpoint] = listing.model_endpoints
    assert isinstance(endpoint, GetLLMEndpointResponse)
    assert (endpoint.name, endpoint.status, endpoint.served) == (DEV_MODEL_NAME, "READY", True)
    assert endpoint.inference_framework == "ctranslate2"
    one = Model.get(DEV_MODEL_NAME)
    assert one == endpoint
    _, wire = api.call("GET", ONE)
    assert one.model_dump(mode="json") == wire


def test_model_get_of_an_unknown_model_is_not_found(client: LocalStack) -> None:
    with pytest.raises(NotFoundError) as caught:
        Model.get("nope")
    assert caught.value.status_code == 404 and "'nope' not found" in caught.value.detail
    with pytest.raises(NotFoundError):
        Model.get("../../completions-async")  # quoted: it stays one path segment


def test_model_list_with_a_bad_key_is_unauthorized(client: LocalStack) -> None:
    configure(api_key="hr-not-a-key")
    with pytest.raises(UnauthorizedError):
        Model.list()


# ---- Scale's LLM Engine client: what the README says it does with these answers -------------


def test_llm_engine_clients_model_refuses_ctranslate2(
    client: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ENGINE_DISABLE_VERSION_CHECK", "true")  # no PyPI call at import
    llmengine: Any = importlib.import_module("llmengine")
    pydantic_v1: Any = importlib.import_module("pydantic.v1")
    monkeypatch.setenv("LLM_ENGINE_BASE_PATH", client.base_url + "/")
    monkeypatch.setenv("SCALE_API_KEY", client.api_key)
    frameworks = {f.value for f in llmengine.data_types.core.LLMInferenceFramework}
    assert "ctranslate2" not in frameworks  # a closed list: nothing true to send would pass

    with pytest.raises(pydantic_v1.ValidationError) as caught:
        llmengine.Model.get(DEV_MODEL_NAME)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("source",), "type_error.none.not_allowed"),
        (("inference_framework",), "type_error.enum"),
    ]
    with pytest.raises(pydantic_v1.ValidationError) as caught:
        llmengine.Model.list()
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
        (("model_endpoints", 0, "source"), "type_error.none.not_allowed"),
        (("model_endpoints", 0, "inference_framework"), "type_error.enum"),
    ]
    # Its errors still map: an unknown model is its NotFoundError, before any validation.
    with pytest.raises(llmengine.errors.NotFoundError):
        llmengine.Model.get("nope")
