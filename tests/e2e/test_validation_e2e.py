"""Bad input answers 4xx with a message naming the problem, never a 5xx."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest

from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.support import Api

ASYNC = f"/v1/llm/completions-async?model_endpoint_name={DEV_MODEL_NAME}"
GOOD: dict[str, Any] = {"prompt": "The river", "max_new_tokens": 4, "temperature": 0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": "3"}, "max_new_tokens"),
        ({"max_new_tokens": 100_000}, "max_new_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.2}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"stop_sequences": "x"}, "stop_sequences"),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"return_token_log_probs": "yes"}, "return_token_log_probs"),
        ({"guided_json": {"type": "nonsense"}}, "guided_json"),
        ({"guided_regex": "[a-z"}, "guided_regex"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_grammar": "root ::= 'a'"}, "guided_grammar"),
        ({"temprature": 0.5}, "temprature"),
    ],
)
def test_bad_field_is_a_400_naming_it(api: Api, change: dict[str, Any], field: str) -> None:
    status, body = api.call("POST", ASYNC, {**GOOD, **change})
    assert status == 400, body
    assert body["detail"].startswith(f"{field}:"), body


def test_zero_penalties_are_accepted(api: Api) -> None:
    status, body = api.call("POST", ASYNC, {**GOOD, "presence_penalty": 0, "frequency_penalty": 0})
    assert status == 202, body


@pytest.mark.parametrize("raw", [b"not json", b"{", b""])
def test_non_json_body_is_422(api: Api, raw: bytes) -> None:
    status, body = api.call("POST", ASYNC, raw=raw)
    assert status == 422, body
    assert "JSON" in body["detail"]


def test_body_that_is_not_an_object_is_400(api: Api) -> None:
    status, body = api.call("POST", ASYNC, [GOOD])
    assert status == 400 and "object" in body["detail"], body


def test_oversized_prompt_is_413(api: Api) -> None:
    status, body = api.call("POST", ASYNC, {**GOOD, "prompt": "x" * (64 * 1024 + 1)})
    assert status == 413, body
    assert "prompt" in body["detail"]


def test_unknown_model_is_404(api: Api) -> None:
    status, body = api.call("POST", "/v1/llm/completions-async?model_endpoint_name=nope", GOOD)
    assert status == 404 and "nope" in body["detail"], body
    status, body = api.call("POST", "/v1/llm/completions-async", {**GOOD, "model": "nope"})
    assert status == 404, body


def test_missing_model_is_400(api: Api) -> None:
    status, body = api.call("POST", "/v1/llm/completions-async", GOOD)
    assert status == 400 and body["detail"].startswith("model:"), body


def test_no_key_and_wrong_key_are_401(stack: LocalStack) -> None:
    for key in (None, "not-a-key"):
        status, body = Api(stack.base_url, key).call("POST", ASYNC, GOOD)
        assert status == 401, body
        assert body["detail"]


def test_basic_auth_with_the_key_as_user_name_works(stack: LocalStack) -> None:
    token = base64.b64encode(f"{stack.api_key}:".encode()).decode()
    status, body = Api(stack.base_url, None).call(
        "GET", "/v1/llm/model-endpoints", headers={"authorization": f"Basic {token}"}
    )
    assert status == 200, body


def test_another_keys_request_is_404(api: Api, stack: LocalStack, aws: AwsClients) -> None:
    other_key = "hr-test-" + hashlib.sha256(b"other").hexdigest()[:16]
    assert stack.resources is not None
    aws.dynamodb.put_item(
        **job_table.put_api_key(
            stack.resources.table_name, other_key, name="other", now=time.time()
        )
    )
    request_id = api.submit(GOOD)
    status, body = Api(stack.base_url, other_key).call("GET", f"/v1/llm/completions/{request_id}")
    assert status == 404, body
    status, _ = api.call("GET", f"/v1/llm/completions/{request_id}")
    assert status == 200


@pytest.mark.parametrize("request_id", ["does-not-exist", "00000000-0000-4000-8000-000000000000"])
def test_unknown_request_id_is_404(api: Api, request_id: str) -> None:
    status, body = api.call("GET", f"/v1/llm/completions/{request_id}")
    assert status == 404, body


def test_unknown_route_is_404(api: Api) -> None:
    status, _ = api.call("GET", "/v1/llm/nothing-here")
    assert status == 404
