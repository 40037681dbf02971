"""OpenAI's official Python SDK, unchanged, against the local stack: completions and chat (and
their /v2/ twins), whole and streamed, and the model list. Every request is a job: its `id` is
a request_id the job view knows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from headrace.core import routes
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.openai_support import RENDERED_CHAT, function_app, second_gateway
from tests.e2e.support import Api
from tests.e2e.test_openapi import conforms, response_schema

PROMPT = "The river"
MESSAGES: list[Any] = [
    {"role": "developer", "content": "Be brief."},  # OpenAI's newer name for a system message
    {"role": "user", "content": [{"type": "text", "text": "Tell of the mill."}]},
]


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[OpenAI]:
    # No retries: a test sees every answer as the server gave it.
    with OpenAI(base_url=stack.base_url + "/v1", api_key=stack.api_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def short_wait(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway on the stack's AWS endpoint (its worker serves the jobs) with no sync
    wait, and a model `headrace-plain` without a chat template."""
    with second_gateway(stack, tmp_path_factory.mktemp("openai-gateway")) as base_url:
        yield base_url


def test_a_completion_is_a_job_with_the_llm_engine_routes_text(client: OpenAI, api: Api) -> None:
    done = client.completions.create(
        model=DEV_MODEL_NAME,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        n=1,  # neutral values of what the engine cannot do are accepted
        presence_penalty=0,
        user="tester-7",
    )
    [choice] = done.choices
    job = api.wait(done.id)  # the id is the request_id: GET /v1/llm/completions/{id}
    assert job["status"] == "SUCCEEDED" and job["output"]["text"] == choice.text
    assert job["metadata"] == {"user": "tester-7"}
    assert choice.finish_reason == "length" and done.usage is not None
    assert done.usage.completion_tokens == job["output"]["num_completion_tokens"] == 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + 12
    status, sync = api.call(
        "POST",
        f"/v1/llm/completions-sync?model_endpoint_name={DEV_MODEL_NAME}",
        {"prompt": PROMPT, "max_new_tokens": 12, "temperature": 0},
    )
    assert status == 200 and sync["output"]["text"] == choice.text


def test_stop_and_log_probs(client: OpenAI) -> None:
    whole = client.completions.create(
        model=DEV_MODEL_NAME, prompt=PROMPT, max_tokens=30, temperature=0
    ).choices[0]
    stop = whole.text[10:13]
    stopped = client.completions.create(
        model=DEV_MODEL_NAME, prompt=PROMPT, max_tokens=30, temperature=0, stop=[stop], logprobs=0
    )
    [choice] = stopped.choices
    assert choice.text == whole.text[: whole.text.find(stop)]
    assert choice.finish_reason == "stop"
    logprobs = choice.logprobs
    assert logprobs is not None and stopped.usage is not None
    assert logprobs.tokens is not None and logprobs.token_logprobs is not None
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == stopped.usage.completion_tokens
    assert all(value <= 0 for value in logprobs.token_logprobs)
    assert "".join(logprobs.tokens).startswith(choice.text)


def test_a_streamed_completion_ends_with_usage(client: OpenAI, api: Api) -> None:
    whole = client.completions.create(
        model=DEV_MODEL_NAME, prompt=PROMPT, max_tokens=20, temperature=0
    ).choices[0]
    chunks = list(
        client.completions.create(
            model=DEV_MODEL_NAME,
            prompt=PROMPT,
            max_tokens=20,
            temperature=0,
            logprobs=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in with_choices) == whole.text
    assert with_choices[-1].choices[0].finish_reason == "length"
    streamed_tokens = [
        t for c in with_choices if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []
    ]
    assert len(streamed_tokens) == 20
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens == 20
    assert {c.id for c in chunks} == {chunks[0].id}
    assert api.wait(chunks[0].id)["output"]["text"] == whole.text


def test_chat_is_rendered_with_the_models_template(client: OpenAI, stack: LocalStack) -> None:
    chat = client.chat.completions.create(
        model=DEV_MODEL_NAME,
        messages=MESSAGES,
        max_completion_tokens=16,
        temperature=0,
        logprobs=True,
        top_logprobs=0,
    )
    plain = client.completions.create(
        model=DEV_MODEL_NAME, prompt=RENDERED_CHAT, max_tokens=16, temperature=0
    )
    [choice] = chat.choices
    assert choice.message.role == "assistant" and choice.message.content == plain.choices[0].text
    assert chat.usage == plain.usage
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert len(choice.logprobs.content) == 16
    # Streamed, on LLM Engine's /v2/ prefix: the same text, chunk by chunk.
    with OpenAI(base_url=stack.base_url + "/v2", api_key=stack.api_key, max_retries=0) as v2:
        stream = v2.chat.completions.create(
            model=DEV_MODEL_NAME, messages=MESSAGES, max_tokens=16, temperature=0, stream=True
        )
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"n": 2}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logprobs": 2}, "logprobs"),
        ({"temperature": 1.5}, "temperature"),
        ({"seed": 7}, "seed"),
        ({"extra_body": {"guided_choice": ["a"]}}, "guided_choice"),
    ],
)
def test_an_unsupported_parameter_is_a_400_naming_it(
    client: OpenAI, arguments: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model=DEV_MODEL_NAME, prompt=PROMPT, max_tokens=2, **arguments)
    assert raised.value.status_code == 400
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == param
    assert raised.value.body["message"].startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"top_logprobs": 3, "logprobs": True}, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages.0.role"),
    ],
)
def test_an_unsupported_chat_parameter_is_a_400_naming_it(
    client: OpenAI, arguments: dict[str, Any], param: str
) -> None:
    arguments = {"messages": MESSAGES, **arguments}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=DEV_MODEL_NAME, max_tokens=2, **arguments)
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == param


def test_the_api_key_is_a_bearer_token(stack: LocalStack, client: OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [DEV_MODEL_NAME]
    assert client.models.retrieve(DEV_MODEL_NAME).id == DEV_MODEL_NAME
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"
    with (
        OpenAI(base_url=stack.base_url + "/v1", api_key="not-a-key", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.chat.completions.create(model=DEV_MODEL_NAME, messages=MESSAGES)


def test_chat_on_a_model_without_a_template_is_a_400(short_wait: str, stack: LocalStack) -> None:
    with (
        OpenAI(base_url=short_wait + "/v1", api_key=stack.api_key, max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as raised,
    ):
        client.chat.completions.create(model="headrace-plain", messages=MESSAGES)
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == "messages"
    assert "no chat template" in raised.value.message


def test_past_the_sync_wait_the_error_names_the_job_to_poll(
    short_wait: str, stack: LocalStack, api: Api
) -> None:
    # Retries allowed: the answer must tell the SDK not to resend (that would be another job).
    with OpenAI(base_url=short_wait + "/v1", api_key=stack.api_key, max_retries=2) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=DEV_MODEL_NAME, messages=MESSAGES, max_tokens=8)
        assert raised.value.status_code == 504
        assert raised.value.response.headers["x-should-retry"] == "false"
        body = raised.value.body
        assert isinstance(body, dict) and body["code"] == "request_pending"
        assert api.wait(body["request_id"])["status"] == "SUCCEEDED"
        # A stream has no such limit: it follows the job to its end.
        stream = client.chat.completions.create(
            model=DEV_MODEL_NAME, messages=MESSAGES, max_tokens=8, stream=True
        )
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_the_streaming_functions_url_serves_every_route(
    stack: LocalStack, api: Api, tmp_path: Path
) -> None:
    # On AWS the HTTP API cannot stream: the streaming function's URL serves these routes,
    # whole and streamed, so that one base URL does for an SDK.
    with (
        function_app(stack, tmp_path) as base_url,
        OpenAI(base_url=base_url + "/v1", api_key=stack.api_key, max_retries=0) as client,
    ):
        assert [model.id for model in client.models.list()] == [DEV_MODEL_NAME]
        chat = client.chat.completions.create(
            model=DEV_MODEL_NAME, messages=MESSAGES, max_tokens=6, temperature=0
        )
        assert api.wait(chat.id)["output"]["text"] == chat.choices[0].message.content
        stream = client.completions.create(
            model=DEV_MODEL_NAME, prompt=RENDERED_CHAT, max_tokens=6, temperature=0, stream=True
        )
        text = "".join(chunk.choices[0].text for chunk in stream)
        assert text == chat.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model=DEV_MODEL_NAME, prompt=PROMPT, best_of=3)
        assert isinstance(raised.value.body, dict) and raised.value.body["param"] == "best_of"


def test_the_answers_match_the_openapi_document(api: Api) -> None:
    chat = {"model": DEV_MODEL_NAME, "messages": MESSAGES, "max_tokens": 4}
    checks: list[tuple[str, str, str, Any, int]] = [
        ("POST", routes.OPENAI_COMPLETIONS, "", {"model": DEV_MODEL_NAME, "prompt": PROMPT}, 200),
        ("POST", routes.V2_CHAT_COMPLETIONS, "", {**chat, "logprobs": True}, 200),
        ("POST", routes.OPENAI_CHAT_COMPLETIONS, "", {**chat, "n": 2}, 400),
        ("GET", routes.OPENAI_MODELS, "", None, 200),
        ("GET", routes.OPENAI_MODEL, "nope", None, 404),
    ]
    for method, path, model, body, status in checks:
        answered, answer = api.call(method, path.format(model=model), body)
        assert answered == status, answer
        conforms(response_schema(path, method.lower(), status), answer)
