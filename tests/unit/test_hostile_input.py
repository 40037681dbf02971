"""The pure checks behind tests/e2e/test_hostile_*.py: text a Lambda event can carry, API keys,
request bounds, route selection, sampling the engine can take, the model's context."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from headrace.api.auth import api_key_from_headers, authenticate
from headrace.api.services import ApiServices
from headrace.api.websocket import event_without_stream
from headrace.client.errors import BadRequestError, ServerError, job_failed_error
from headrace.core.contracts import (
    CompletionRequest,
    JobError,
    JobErrorType,
    JobStatus,
    parse_completion_request,
)
from headrace.core.errors import InvalidRequest, Unauthorized, UnprocessableBody
from headrace.core.tables.jobs import JobRecord
from headrace.dev.apigw import wire_text
from headrace.dev.ws_events import DEFAULT, select_route
from tests.events import HTTP_EVENTS, load_event
from tests.handler_support import http_answer, websocket_error, with_body
from tests.scheduling import runner
from worker.decoding import sampling_params
from worker.engine import DEFAULT_MAX_CONTEXT_TOKENS, Engine, EngineConfig, SamplingParams
from worker.scheduler import RequestRefused

NO_SERVICES = cast(ApiServices, None)  # the checks below answer before any service is used
GREEDY = SamplingParams(top_k=1, top_p=1.0, temperature=1.0)

# --- 1. bytes that are not UTF-8


def test_wire_text_turns_bytes_that_are_not_utf8_into_the_replacement_character() -> None:
    as_aiohttp_decodes = b"caf\xe9 ok".decode("utf-8", "surrogateescape")
    assert wire_text(as_aiohttp_decodes) == "caf\ufffd ok"
    assert wire_text("café 日本") == "café 日本"
    assert wire_text("a\ud800b") == "a?b"  # a surrogate no byte escapes to
    json.dumps(wire_text(as_aiohttp_decodes), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    "credentials", ["caf\xe9", "caf\udce9", base64.b64encode(b"caf\xe9:").decode(), "not b64!"]
)
def test_basic_credentials_that_are_not_base64_of_utf8_are_unauthorized(credentials: str) -> None:
    with pytest.raises(Unauthorized, match=r"^authorization: basic credentials"):
        api_key_from_headers({"authorization": f"Basic {credentials}"})


def test_good_basic_credentials_give_the_key() -> None:
    token = base64.b64encode("clé:".encode()).decode()
    assert api_key_from_headers({"authorization": f"Basic {token}"}) == "clé"


def test_a_key_that_cannot_be_utf8_is_unknown_before_any_lookup() -> None:
    with pytest.raises(Unauthorized, match=r"^unknown API key$"):
        authenticate(NO_SERVICES, "caf\udce9")


@pytest.mark.parametrize("route_key", HTTP_EVENTS)
def test_an_http_event_with_such_a_key_is_a_401(
    monkeypatch: pytest.MonkeyPatch, route_key: str
) -> None:
    event = load_event(HTTP_EVENTS[route_key])
    event["headers"]["x-api-key"] = "caf\udce9"  # a `\udce9` escape in the event's JSON
    monkeypatch.setattr("handlers.http.default_services", lambda: NO_SERVICES)
    assert http_answer(route_key, event) == (401, {"detail": "unknown API key"})


# --- 2. request values the engine cannot take


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"top_k": 2**63 - 1}, "top_k"),
        ({"top_k": 1_000_001}, "top_k"),
        ({"top_p": 5e-324}, "top_p"),
        ({"top_p": 9.99e-7}, "top_p"),
    ],
)
def test_bounds_the_engine_needs_are_checked_at_the_door(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest, match=f"^{field}: "):
        parse_completion_request(json.dumps({"prompt": "x", **fields}))


def test_the_bounds_themselves_are_accepted() -> None:
    body = json.dumps({"prompt": "x", "top_k": 1_000_000, "top_p": 1e-6})
    request = parse_completion_request(body)
    assert (request.top_k, request.top_p) == (1_000_000, 1e-6)


def test_json_nested_too_deeply_is_a_422_saying_why() -> None:
    body = '{"prompt": "x", "guided_json": ' + "[" * 1100 + "]" * 1100 + "}"
    with pytest.raises(UnprocessableBody, match=r"^body: not valid JSON \(recursion limit"):
        parse_completion_request(body)


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": "x", **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"temperature": 0.5, "top_k": 1535}, SamplingParams(top_k=1535, temperature=0.5)),
        ({"temperature": 0.5, "top_k": 1536}, SamplingParams(top_k=0, temperature=0.5)),
        ({"temperature": 0.5, "top_k": 1_000_000}, SamplingParams(top_k=0, temperature=0.5)),
        ({"temperature": 1e-40}, GREEDY),
        ({"temperature": 9.9e-7, "top_k": 5}, GREEDY),
        ({"temperature": 1e-6}, SamplingParams(top_k=0, temperature=1e-6)),
    ],
)
def test_sampling_the_engine_can_take(fields: dict[str, Any], expected: SamplingParams) -> None:
    assert sampling_params(request(**fields), vocabulary_size=1536) == expected


@pytest.fixture(scope="module")
def engine(dev_model_dir: Path) -> Any:
    loaded = Engine(dev_model_dir, EngineConfig("cpu", "default", 1, 1))
    yield loaded
    loaded.close()


def test_a_model_declares_its_context_in_its_config(dev_model_dir: Path, tmp_path: Path) -> None:
    declared = shutil.copytree(dev_model_dir, tmp_path / "model")
    config = json.loads((declared / "config.json").read_text())
    (declared / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    engine = Engine(declared, EngineConfig("cpu", "default", 1, 1))
    try:
        assert engine.max_context_tokens == 64
    finally:
        engine.close()


def test_a_model_that_declares_none_gets_the_default(engine: Engine) -> None:
    assert engine.max_context_tokens == DEFAULT_MAX_CONTEXT_TOKENS == 4096


@pytest.mark.parametrize(
    ("prompt", "max_new_tokens"), [("a " * 32_000, 20), ("The river", 4096)], ids=["prompt", "new"]
)
def test_the_runner_refuses_a_request_over_the_context_before_decoding(
    engine: Engine, dev_model_dir: Path, prompt: str, max_new_tokens: int
) -> None:
    model = runner(engine, dev_model_dir)  # not serving: a refusal needs no batch
    job = CompletionRequest(prompt=prompt, max_new_tokens=max_new_tokens, temperature=0)
    with pytest.raises(RequestRefused, match="over the model's context of 4096 tokens") as caught:
        asyncio.run(model.complete("too-long", job))
    assert caught.value.status_code == 400


# --- 2. a job the worker refused, as the API and the client tell it


def failed_record(error_type: JobErrorType) -> JobRecord:
    error = JobError(message="prompt: too long", type=error_type)
    return JobRecord(
        request_id="r",
        owner="o",
        model="m",
        status=JobStatus.FAILED,
        attempts=1,
        request=request(),
        created_at=0.0,
        updated_at=0.0,
        error=error,
    )


def test_a_refused_job_streams_a_400_and_another_failure_a_500() -> None:
    refused = event_without_stream(failed_record("invalid_request")).error
    failed = event_without_stream(failed_record("decode_failed")).error
    assert refused is not None and refused.status_code == 400
    assert failed is not None and failed.status_code == 500


def test_the_client_raises_a_bad_request_for_a_refused_job() -> None:
    refused = job_failed_error("r", {"message": "prompt: too long", "type": "invalid_request"})
    assert isinstance(refused, BadRequestError) and refused.status_code == 400
    assert str(refused) == "prompt: too long" and refused.request_id == "r"
    failed = job_failed_error("r", JobError(message="engine error", type="decode_failed"))
    assert isinstance(failed, ServerError) and failed.status_code == 500


# --- 3. WebSocket frames


def test_route_selection_survives_json_nested_deeper_than_python_recurses() -> None:
    deep = '{"action": "complete", "x": ' + "[" * 1100 + "]" * 1100 + "}"
    assert select_route(deep, {"complete", DEFAULT}) == DEFAULT


def test_the_default_route_answers_such_a_frame_with_a_400(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("handlers.websocket.default_services", lambda: NO_SERVICES)
    event = with_body("$default", "[" * 1100 + "]" * 1100)
    status, message = websocket_error("$default", event)
    assert status == 400 and message.startswith("frame: JSON nested too deeply"), message
