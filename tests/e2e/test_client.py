"""The Python client against the real local stack: create, acreate, submit/get, batch, the
stack's errors; and Scale's LLM Engine client pointed at the same stack. (Its error mapping and
configuration, which need no stack: tests/unit/test_client_errors.py, test_client_config.py.)"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from datetime import datetime
from typing import Any

import pytest

from headrace import (
    BadRequestError,
    Completion,
    HeadraceClientError,
    HeadraceConnectionError,
    NotFoundError,
    UnauthorizedError,
)
from headrace.client import CompletionStreamResponse, configure
from headrace.core.contracts import JobView
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.support import Api

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def client(stack: LocalStack) -> LocalStack:
    configure(base_url=stack.base_url, api_key=stack.api_key)
    return stack


def sync_route_text(api: Api, prompt: str, max_new_tokens: int) -> str:
    status, body = api.call(
        "POST",
        f"/v1/llm/completions-sync?model_endpoint_name={DEV_MODEL_NAME}",
        {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": 0},
    )
    assert status == 200, body
    return str(body["output"]["text"])


# ---- completions ------------------------------------------------------------------------------


def test_create_returns_the_services_greedy_completion(client: LocalStack, api: Api) -> None:
    response = Completion.create(
        model=DEV_MODEL_NAME, prompt="The river", max_new_tokens=12, temperature=0
    )
    assert response.output.text == sync_route_text(api, "The river", 12)
    assert response.output.num_completion_tokens > 0
    assert response.output.num_prompt_tokens is not None and response.output.tokens is None
    wire = json.loads(response.json())
    assert wire == {"request_id": response.request_id, "output": response.output.model_dump(
        exclude_none=True)}  # fmt: skip


def test_create_polls_when_the_timeout_is_short_and_defaults_the_model(client: LocalStack) -> None:
    slow = Completion.create(DEV_MODEL_NAME, "The mill", max_new_tokens=10, temperature=0)
    polled = Completion.create(None, "The mill", max_new_tokens=10, temperature=0, timeout=20)
    assert polled.output == slow.output
    assert polled.request_id != slow.request_id


def test_create_returns_token_log_probs(client: LocalStack) -> None:
    response = Completion.create(
        prompt="The wheel", max_new_tokens=5, temperature=0, return_token_log_probs=True
    )
    assert response.output.tokens is not None
    assert len(response.output.tokens) == response.output.num_completion_tokens
    assert all(t.log_prob <= 0 for t in response.output.tokens)


def test_acreate_gives_what_create_gives(client: LocalStack) -> None:
    async def both() -> list[str]:
        answers = await asyncio.gather(
            Completion.acreate(DEV_MODEL_NAME, "The queue", max_new_tokens=8, temperature=0),
            Completion.acreate(
                DEV_MODEL_NAME, "The queue", max_new_tokens=8, temperature=0, timeout=20
            ),
        )
        return [a.output.text for a in answers]

    expected = Completion.create(DEV_MODEL_NAME, "The queue", max_new_tokens=8, temperature=0)
    assert asyncio.run(both()) == [expected.output.text] * 2


def test_submit_then_get_and_wait(client: LocalStack) -> None:
    request_id = Completion.submit(DEV_MODEL_NAME, "The gate", max_new_tokens=6, temperature=0)
    job = Completion.get(request_id)
    assert isinstance(job, JobView) and job.request_id == request_id
    assert job.model == DEV_MODEL_NAME
    response = Completion.wait(request_id, timeout=30)
    final = Completion.get(request_id)
    assert final.status == "SUCCEEDED" and final.attempts == 1
    assert final.output is not None and final.output["text"] == response.output.text
    assert asyncio.run(Completion.aget(request_id)) == final


def test_batch_create_keeps_input_order_and_captures_errors_per_item(client: LocalStack) -> None:
    prompts: list[str | dict[str, object]] = [f"Job {i} of the mill" for i in range(20)]
    prompts[7] = {"prompt": "too hot", "temperature": 3.0}
    results = Completion.batch_create(prompts, max_new_tokens=6, temperature=0, concurrency=8)
    assert [r.index for r in results] == list(range(20))
    bad = results[7]
    assert bad.status == "FAILED" and isinstance(bad.error, BadRequestError)
    assert bad.error.detail.startswith("temperature")
    good = [r for i, r in enumerate(results) if i != 7]
    assert all(r.ok and r.status == "SUCCEEDED" and r.response for r in good)
    single = Completion.create(prompt="Job 3 of the mill", max_new_tokens=6, temperature=0)
    assert results[3].response is not None
    assert results[3].response.output.text == single.output.text


# ---- streaming over the WebSocket API --------------------------------------------------------


def streamed_text(events: list[CompletionStreamResponse]) -> str:
    assert all(e.error is None and e.output is not None for e in events), events[-1]
    return "".join(e.output.text for e in events if e.output)


def test_create_stream_adds_up_to_the_completion(client: LocalStack) -> None:
    request: dict[str, Any] = {"prompt": "The river", "max_new_tokens": 24, "temperature": 0}
    whole = Completion.create(DEV_MODEL_NAME, **request)
    events = list(Completion.create(DEV_MODEL_NAME, **request, stream=True))
    assert streamed_text(events) == whole.output.text
    assert [e.seq for e in events] == list(range(len(events)))
    last = events[-1].output
    assert last is not None and last.finished
    assert last.num_completion_tokens == whole.output.num_completion_tokens
    assert not any(e.output and e.output.finished for e in events[:-1])
    request_id = events[0].request_id
    assert request_id is not None and {e.request_id for e in events} == {request_id}
    # The same job followed again, from the start: a finished job replays its stored events.
    assert streamed_text(list(Completion.stream_existing(request_id))) == whole.output.text


def test_acreate_stream_adds_up_to_the_completion(client: LocalStack) -> None:
    async def stream() -> list[CompletionStreamResponse]:
        events = await Completion.acreate(
            prompt="The mill", max_new_tokens=16, temperature=0, stream=True
        )
        return [event async for event in events]

    whole = Completion.create(prompt="The mill", max_new_tokens=16, temperature=0)
    assert streamed_text(asyncio.run(stream())) == whole.output.text


def test_a_stream_rejected_by_the_server_raises(client: LocalStack) -> None:
    with pytest.raises(BadRequestError, match=r"^temperature"):
        list(Completion.create(prompt="The mill", temperature=3.0, stream=True))
    configure(api_key="hr-not-a-key")
    with pytest.raises(UnauthorizedError):
        list(Completion.create(prompt="The mill", stream=True))


# ---- errors from the real stack -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error", "status", "starts"),
    [
        ({"temperature": 1.5}, BadRequestError, 400, "temperature"),
        ({"top_p": 0.0}, BadRequestError, 400, "top_p"),
        ({"presence_penalty": 0.5}, BadRequestError, 400, "presence_penalty"),
        ({"prompt": "x" * 70_000}, BadRequestError, 413, "prompt"),
        ({"model": "no-such-model"}, NotFoundError, 404, "model 'no-such-model' not found"),
    ],
)
def test_errors_carry_the_servers_status_and_detail(
    client: LocalStack, fields: dict[str, object], error: type[Exception], status: int, starts: str
) -> None:
    arguments: dict[str, object] = {"prompt": "The river", "max_new_tokens": 4, **fields}
    with pytest.raises(HeadraceClientError) as caught:
        Completion.create(**arguments)  # type: ignore[call-overload]
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert caught.value.detail.startswith(starts), caught.value.detail


def test_a_bad_key_is_unauthorized_sync_and_async(client: LocalStack) -> None:
    configure(api_key="hr-not-a-key")
    with pytest.raises(UnauthorizedError) as caught:
        Completion.create(prompt="The river")
    assert caught.value.status_code == 401 and caught.value.detail == "unknown API key"
    with pytest.raises(UnauthorizedError):
        asyncio.run(Completion.acreate(prompt="The river"))


def test_an_unknown_request_is_not_found(client: LocalStack) -> None:
    with pytest.raises(NotFoundError) as caught:
        Completion.get("00000000-0000-4000-8000-000000000000")
    assert caught.value.status_code == 404
    with pytest.raises(NotFoundError):
        Completion.get("../../v1/llm/model-endpoints")  # quoted: it stays one path segment


def test_an_unreachable_api_says_to_start_the_stack() -> None:
    configure(base_url="http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(HeadraceConnectionError) as caught:
        Completion.create(prompt="The river")
    assert "http://127.0.0.1:9" in str(caught.value) and "make dev" in str(caught.value)
    assert caught.value.status_code is None
    with pytest.raises(HeadraceConnectionError, match="make dev"):
        asyncio.run(Completion.acreate(prompt="The river"))
    results = Completion.batch_create(["a", "b", "c"], concurrency=1)
    assert all(isinstance(r.error, HeadraceConnectionError) for r in results)
    assert all(r.status == "ERROR" and not r.final for r in results)


# ---- Scale's LLM Engine client, unchanged, pointed at Headrace -----------------------------


# llmengine's acreate passes aiohttp.BasicAuth as `auth`, deprecated in aiohttp 3.14 (their code).
@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning")
def test_llm_engine_client_gets_the_same_completion(
    client: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ENGINE_DISABLE_VERSION_CHECK", "true")  # no PyPI call at import
    # A dev dependency: the compatibility check must not skip silently. Typed as Any because
    # its unions of sync and streaming responses are not what this test exercises.
    llmengine: Any = importlib.import_module("llmengine")

    monkeypatch.setenv("LLM_ENGINE_BASE_PATH", client.base_url + "/")
    monkeypatch.setenv("SCALE_API_KEY", client.api_key)
    prompt, n = "Workers take jobs", 16
    theirs = llmengine.Completion.create(
        model=DEV_MODEL_NAME, prompt=prompt, max_new_tokens=n, temperature=0
    )
    ours = Completion.create(model=DEV_MODEL_NAME, prompt=prompt, max_new_tokens=n, temperature=0)
    assert theirs.output.text == ours.output.text
    assert theirs.output.num_completion_tokens == ours.output.num_completion_tokens
    atheirs = asyncio.run(
        llmengine.Completion.acreate(
            model=DEV_MODEL_NAME, prompt=prompt, max_new_tokens=n, temperature=0
        )
    )
    assert atheirs.output.text == ours.output.text
    streamed = llmengine.Completion.create(
        model=DEV_MODEL_NAME, prompt=prompt, max_new_tokens=n, temperature=0, stream=True
    )
    chunks = list(streamed)
    assert "".join(c.output.text for c in chunks) == ours.output.text
    assert chunks[-1].output.finished and chunks[-1].error is None
    monkeypatch.setenv("SCALE_API_KEY", "hr-not-a-key")
    with pytest.raises(llmengine.errors.UnauthorizedError):
        llmengine.Completion.create(model=DEV_MODEL_NAME, prompt=prompt, max_new_tokens=2)
    assert os.environ["LLM_ENGINE_BASE_PATH"].startswith("http://127.0.0.1")


def test_create_sends_the_lane_and_the_deadline(client: LocalStack, api: Api) -> None:
    response = Completion.create(
        prompt="The mill",
        max_new_tokens=4,
        temperature=0,
        priority="batch",
        timeout_seconds=600,
    )
    job = api.wait(response.request_id)
    assert job["priority"] == "batch"
    assert _seconds_between(job["created_at"], job["deadline"]) == pytest.approx(600, abs=0.01)
    with pytest.raises(BadRequestError) as raised:
        Completion.create(prompt="The mill", max_new_tokens=4, timeout_seconds=-1)
    assert raised.value.detail.startswith("timeout_seconds")


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
