"""LLM Engine's SSE route with a plain HTTP client reading `data:` lines."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.support import Api

PATH = f"/v1/llm/completions-stream?model_endpoint_name={DEV_MODEL_NAME}"


def post_stream(stack: LocalStack, body: Any, key: str | None = None) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        stack.base_url + PATH,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": key or stack.api_key, "content-type": "application/json"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            else:
                assert line == "", line  # data-only events separated by blank lines
    return events


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_sse_events_concatenate_to_the_stored_text(
    api: Api, stack: LocalStack, temperature: float
) -> None:
    events = post_stream(
        stack, {"prompt": "日本語 and the river", "max_new_tokens": 200, "temperature": temperature}
    )
    request_id = events[0]["request_id"]
    stored = api.wait(request_id)["output"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert "".join(e["output"]["text"] for e in events) == stored["text"]
    assert events[-1]["output"]["finished"] is True
    assert events[-1]["output"]["num_completion_tokens"] == stored["num_completion_tokens"]


def test_sse_bad_input_is_a_plain_http_error(stack: LocalStack) -> None:
    for body, key, status in [
        ({"prompt": "x", "temperature": 7}, None, 400),
        ({"prompt": "x"}, "wrong-key", 401),
    ]:
        with pytest.raises(urllib.error.HTTPError) as raised:
            post_stream(stack, body, key)
        assert raised.value.code == status
        assert json.loads(raised.value.read())["detail"]
        raised.value.close()
