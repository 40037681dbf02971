"""The OpenAI-compatible Lambda handlers of template.yaml, called as Lambda calls them with the
sample events of tests/events: OpenAI's error shape, and what they answer before any AWS call
(the key is one this process already trusts, as a warm container does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import handlers.openai_http
from handlers.http import HttpApiEvent
from headrace.api.services import ApiServices
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from tests.events import BATCH_EVENTS, OPENAI_EVENTS, load_event
from tests.handler_support import HTTP_HANDLERS, KEY, MODEL_ZOO, lambda_handler

MISSING_KEY = "missing API key: send it in the x-api-key header"


class NoCalls:
    """An AWS client these tests must not reach: any call fails."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, operation: str) -> Any:
        raise AssertionError(f"unexpected {self.service} call: {operation}")


@pytest.fixture
def services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ApiServices:
    plain = tmp_path / "plain"  # a model directory without a chat template
    plain.mkdir()
    zoo = {**MODEL_ZOO, "headrace-plain": str(plain)}
    built = ApiServices(
        settings=Settings(model_zoo=zoo), dynamodb=NoCalls("dynamodb"), sqs=NoCalls("sqs")
    )
    built._known_keys[job_table.hash_api_key(KEY)] = float("inf")
    monkeypatch.setattr(handlers.openai_http, "default_services", lambda: built)
    return built


def answer(route_key: str, event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    response = lambda_handler(HTTP_HANDLERS[route_key])(event, None)
    headers = response["headers"]
    assert headers["content-type"] == "application/json"
    return response["statusCode"], headers, json.loads(response["body"])


def with_body(route_key: str, **changes: Any) -> dict[str, Any]:
    event = load_event(OPENAI_EVENTS[route_key])
    body = {**json.loads(event["body"]), **changes}
    event["body"] = json.dumps({k: v for k, v in body.items() if v is not None})
    return event


def error(message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "server_error" if message.startswith("internal") else "invalid_request_error"
    detail = {"message": message, "type": kind, "param": param, "code": code, "request_id": None}
    return {"error": detail}


def test_every_openai_route_of_the_template_has_a_sample_event() -> None:
    served = {key for key, handler in HTTP_HANDLERS.items() if ".openai_" in handler}
    assert set(OPENAI_EVENTS) == served


@pytest.mark.parametrize("route_key", OPENAI_EVENTS)
def test_the_sample_events_carry_the_key_as_a_bearer_token(route_key: str) -> None:
    raw = load_event(OPENAI_EVENTS[route_key])
    event = HttpApiEvent.model_validate(raw)
    assert event.route_key == route_key
    assert "x-api-key" not in event.headers and event.api_key() == KEY


@pytest.mark.usefixtures("services")
@pytest.mark.parametrize("route_key", OPENAI_EVENTS)
def test_errors_are_openais_shape(route_key: str) -> None:
    event = load_event(OPENAI_EVENTS[route_key])
    del event["headers"]["authorization"]
    assert answer(route_key, event)[::2] == (401, error(MISSING_KEY, code="invalid_api_key"))
    del event["requestContext"]
    malformed = error("internal error: malformed gateway event")
    assert answer(route_key, event)[::2] == (500, malformed)


@pytest.mark.parametrize("route_key", BATCH_EVENTS)
def test_the_batch_sample_events_parse_with_their_bodies(route_key: str) -> None:
    raw = load_event(BATCH_EVENTS[route_key])
    event = HttpApiEvent.model_validate(raw)
    assert event.route_key == route_key and event.api_key() == KEY
    if route_key == "POST /v1/files":  # multipart, base64-encoded as API Gateway passes it
        assert b'name="purpose"' in event.body_bytes() and b"custom_id" in event.body_bytes()


@pytest.mark.usefixtures("services")
@pytest.mark.parametrize("route_key", BATCH_EVENTS)
def test_batch_routes_answer_errors_in_openais_shape(route_key: str) -> None:
    event = load_event(BATCH_EVENTS[route_key])
    del event["headers"]["authorization"]
    assert answer(route_key, event)[::2] == (401, error(MISSING_KEY, code="invalid_api_key"))


@pytest.mark.usefixtures("services")
def test_the_models_are_the_zoo() -> None:
    status, _, body = answer("GET /v1/models", load_event(OPENAI_EVENTS["GET /v1/models"]))
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["headrace-plain", "headrace-tiny"]
    event = load_event(OPENAI_EVENTS["GET /v1/models/{model}"])
    model = {"id": "headrace-tiny", "object": "model", "created": 0, "owned_by": "headrace"}
    assert answer("GET /v1/models/{model}", event)[::2] == (200, model)
    event["pathParameters"]["model"] = "gpt-4"
    status, _, body = answer("GET /v1/models/{model}", event)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert body["error"]["param"] == "model"


@pytest.mark.usefixtures("services")
@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"n": 3}, "n"),
        ({"best_of": 2}, "best_of"),
        ({"echo": True}, "echo"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "gpt-4"}, "model"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_a_completion_the_engine_cannot_honour_is_refused_before_any_job(
    changes: dict[str, Any], param: str
) -> None:
    for route_key in ("POST /v1/completions", "POST /v2/completions"):
        status, headers, body = answer(route_key, with_body(route_key, **changes))
        assert status == (404 if param == "model" else 400), body
        assert body["error"]["param"] == param and body["error"]["message"].startswith(param)
        assert "x-request-id" not in headers  # no job was made


@pytest.mark.usefixtures("services")
def test_a_body_that_is_not_json_is_a_400_as_openai_answers() -> None:
    event = load_event(OPENAI_EVENTS["POST /v1/completions"])
    event["body"] = "{not json"
    assert answer("POST /v1/completions", event)[::2] == (
        400,
        error("body: not valid JSON", param="body"),
    )


@pytest.mark.usefixtures("services")
def test_the_http_api_points_streams_to_the_streaming_url() -> None:
    for route_key in ("POST /v1/completions", "POST /v1/chat/completions"):
        status, _, body = answer(route_key, with_body(route_key, stream=True))
        assert status == 400 and body["error"]["param"] == "stream"
        assert "CompletionsStreamUrl" in body["error"]["message"]


@pytest.mark.usefixtures("services")
@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"model": "headrace-plain"}, "messages"),  # no chat template
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "4", "tool_call_id": "c"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content.0",
        ),
        ({"top_logprobs": 2, "logprobs": True}, "top_logprobs"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"store": True}, "store"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_a_chat_the_engine_cannot_honour_is_refused_before_any_job(
    changes: dict[str, Any], param: str
) -> None:
    route_key = "POST /v1/chat/completions"
    status, _, body = answer(route_key, with_body(route_key, **changes))
    assert (status, body["error"]["param"]) == (400, param), body
