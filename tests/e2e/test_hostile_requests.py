"""Request values the API used to accept and the engine refused: checked at the door, clamped
by the worker, or (what only the worker can count) refused by it at once, never retried."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.support import Api

QUERY = f"?model_endpoint_name={DEV_MODEL_NAME}"
ASYNC = "/v1/llm/completions-async" + QUERY
SYNC = "/v1/llm/completions-sync" + QUERY
GOOD: dict[str, Any] = {"prompt": "The river", "max_new_tokens": 3, "temperature": 0.5}
# 64,000 bytes, 32,002 tokens of the dev model: far past its context (4,096 tokens). It once ran
# for 100 s and took the worker to 16 GB.
LONG_PROMPT = "a " * 32_000


@pytest.mark.parametrize("route", [ASYNC, SYNC])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"top_k": 2**63 - 1}, "top_k"),
        ({"top_k": 1_000_001}, "top_k"),
        ({"top_p": 5e-324}, "top_p"),
    ],
)
def test_values_the_engine_cannot_take_are_a_400_at_the_door(
    api: Api, route: str, change: dict[str, Any], field: str
) -> None:
    status, body = api.call("POST", route, {**GOOD, **change})
    assert status == 400, body
    assert body["detail"].startswith(f"{field}:"), body


def test_a_top_k_over_the_vocabulary_samples_the_whole_vocabulary(api: Api) -> None:
    status, body = api.call("POST", SYNC, {**GOOD, "top_k": 5000})  # the dev model has 1,536
    assert status == 200, body
    # Sampled from the whole vocabulary: the end token may come before the third.
    assert 1 <= body["output"]["num_completion_tokens"] <= 3, body


@pytest.mark.parametrize(
    "change",
    [{"prompt": LONG_PROMPT}, {"max_new_tokens": 5000}],
    ids=["long-prompt", "many-new-tokens"],
)
def test_a_request_over_the_context_is_a_400_from_the_sync_route(
    api: Api, change: dict[str, Any]
) -> None:
    started = time.monotonic()
    status, body = api.call("POST", SYNC, {**GOOD, **change})
    assert status == 400, body
    assert "over the model's context of 4096 tokens" in body["detail"], body
    assert body["request_id"]
    assert time.monotonic() - started < 15  # refused before decoding, not retried


def test_a_job_over_the_context_fails_at_once_as_an_invalid_request(api: Api) -> None:
    job = api.wait(api.submit({**GOOD, "prompt": LONG_PROMPT}), timeout=20)
    assert job["status"] == "FAILED", job
    assert job["attempts"] == 1, job
    assert job["error"]["type"] == "invalid_request", job
    assert job["error"]["message"].startswith("prompt: 32002 tokens and max_new_tokens 3"), job


def test_a_stream_over_the_context_ends_with_one_400_error_event(stack: LocalStack) -> None:
    request = urllib.request.Request(
        stack.base_url + "/v1/llm/completions-stream" + QUERY,
        data=json.dumps({**GOOD, "prompt": LONG_PROMPT}).encode(),
        headers={"x-api-key": stack.api_key, "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        frames = response.read().decode().split("\n\n")
    events = [json.loads(f.removeprefix("data: ")) for f in frames if f]
    assert len(events) == 1, events
    assert events[0]["output"] is None
    assert events[0]["error"]["status_code"] == 400, events
    assert "context" in events[0]["error"]["content"]["error"]


def test_a_request_too_large_to_queue_is_a_413(api: Api) -> None:
    # 4 stop sequences of 70,000 bytes: within the body limit, over SQS's 256 KiB message limit
    # (which the local AWS endpoint does not enforce: on AWS the enqueue failed, a 503).
    status, body = api.call("POST", ASYNC, {**GOOD, "stop_sequences": ["y" * 70_000] * 4})
    assert status == 413, body
    assert body["detail"].startswith("request: "), body
