"""How an OpenAI request maps onto a job, and a job's stream events onto OpenAI's chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from headrace.api.openai_protocol import parse_chat, parse_completion
from headrace.api.openai_serving import Kind, OpenAIJob, answer_for, completion_job
from headrace.api.openai_stream import ChunkMaker, OpenedStream
from headrace.api.services import ApiServices
from headrace.core.contracts import (
    MIN_TOP_P,
    CompletionRequest,
    JobError,
    JobStatus,
    StreamEvent,
    StreamOutput,
    TokenOutput,
)
from headrace.core.control import halted_event
from headrace.core.errors import InvalidRequest, PayloadTooLarge
from headrace.core.settings import Settings
from headrace.core.tables.jobs import JobRecord

SERVICES = ApiServices(
    settings=Settings(model_zoo={"m": "/models/m"}, max_prompt_bytes=64), dynamodb=None, sqs=None
)


def job_of(**fields: Any) -> CompletionRequest:
    body = {"model": "m", "prompt": "The river", **fields}
    return completion_job(SERVICES, parse_completion(json.dumps(body).encode())).request


def test_openai_defaults_become_the_jobs() -> None:
    job = job_of()
    # OpenAI's defaults: 16 tokens, temperature 1 (the model's own distribution), no stops.
    assert (job.max_new_tokens, job.temperature, job.top_p, job.stop_sequences) == (
        16,
        1.0,
        None,
        None,
    )
    assert job.return_token_log_probs is False and job.metadata is None
    assert job.include_stop_str_in_output is None  # the stop text is left out, as OpenAI does


def test_parameters_pass_unchanged() -> None:
    job = job_of(max_tokens=7, temperature=0.7, top_p=0.9, top_k=5, stop="\n", logprobs=0, user="u")
    assert (job.max_new_tokens, job.temperature, job.top_p, job.top_k) == (7, 0.7, 0.9, 5)
    assert job.stop_sequences == ["\n"] and job.return_token_log_probs is True
    assert job.metadata == {"user": "u"}
    # top_p 0 keeps the most likely token alone, as the job contract's smallest top_p does.
    assert job_of(top_p=0).top_p == MIN_TOP_P
    assert job_of(temperature=0).temperature == 0.0  # greedy
    assert job_of(prompt=["one prompt in a list"]).prompt == "one prompt in a list"


def test_neutral_values_are_accepted() -> None:
    neutral = {
        "n": 1,
        "best_of": 1,
        "echo": False,
        "suffix": "",
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "stream": False,
    }
    assert job_of(**neutral).prompt == "The river"


def test_limits_name_openais_parameters() -> None:
    with pytest.raises(PayloadTooLarge, match=r"^prompt: "):
        job_of(prompt="x" * 65)
    with pytest.raises(InvalidRequest, match=r"^temperature: at most 1"):
        job_of(temperature=1.01)


def opened(kind: Kind = "chat", *, usage: bool = True, logprobs: bool = True) -> OpenedStream:
    request = CompletionRequest(prompt="p", max_new_tokens=3, return_token_log_probs=logprobs)
    job = OpenAIJob(kind=kind, model="m", request=request, stream=True, include_usage=usage)
    return OpenedStream(owner="o", request_id="r-1", job=job, created=1700000000)


def event(
    text: str, *, finished: bool = False, token: str | None = None, done: int = 1
) -> StreamEvent:
    output = StreamOutput(
        text=text,
        finished=finished,
        num_prompt_tokens=4 if finished else None,
        num_completion_tokens=done,
        token=TokenOutput(token=token, log_prob=-0.5) if token else None,
    )
    return StreamEvent(request_id="r-1", seq=0, output=output)


def test_chat_chunks_with_logprobs_and_usage() -> None:
    maker = ChunkMaker(opened())
    [first] = maker.of(event("Hel", token="Hel"))
    assert first["object"] == "chat.completion.chunk" and first["id"] == "r-1"
    assert first["choices"][0]["delta"] == {"content": "Hel"}
    assert first["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.5
    assert first["usage"] is None  # include_usage: every chunk has it, null but in the last
    *deltas, finish, usage = maker.of(event("lo", finished=True, token="lo", done=3))
    assert [d["choices"][0]["delta"]["content"] for d in deltas] == ["lo"]
    assert finish["choices"][0]["finish_reason"] == "length"
    assert finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 3,
        "total_tokens": 7,
    }


def test_completion_chunks_count_text_offsets() -> None:
    maker = ChunkMaker(opened("completion", usage=False))
    [one] = maker.of(event("ab", token="ab"))
    [two] = maker.of(event("c", token="c", done=2))
    assert one["object"] == "text_completion" and "usage" not in one
    assert one["choices"][0]["logprobs"]["text_offset"] == [0]
    assert two["choices"][0]["logprobs"]["text_offset"] == [2]
    [*_, end] = maker.of(event("", finished=True, done=2))
    assert end["choices"][0]["finish_reason"] == "stop"  # ended before max_tokens


def test_a_cancelled_job_ends_with_an_error() -> None:
    maker = ChunkMaker(opened(usage=False, logprobs=False))
    last = halted_event(
        "r-1", JobStatus.CANCELLED, text="x", num_prompt_tokens=4, num_completion_tokens=2
    )
    delta, error = maker.of(last)
    assert delta["choices"][0]["delta"]["content"] == "x"
    assert error["error"]["code"] == "cancelled" and error["error"]["request_id"] == "r-1"
    failed = maker.of(StreamEvent.failure("r-1", 400, "prompt: too long"))
    assert failed == [
        {
            "error": {
                "message": "prompt: too long",
                "type": "invalid_request_error",
                "param": "prompt",
                "code": None,
                "request_id": "r-1",
            }
        }
    ]


def test_chat_messages_are_parsed_as_openai_sends_them() -> None:
    request = parse_chat(
        b'{"model": "m", "messages": [{"role": "user", "content": "hi", "name": "ann"}],'
        b' "stream_options": {"include_usage": true, "include_obfuscation": true}, "stream": true}'
    )
    assert request.messages[0].name == "ann" and request.stream_options is not None


@pytest.mark.parametrize(
    ("status", "error", "answered"),
    [
        (JobStatus.QUEUED, None, (504, "request_pending", None)),
        (JobStatus.RUNNING, None, (504, "request_pending", None)),
        (JobStatus.TIMED_OUT, None, (504, "timed_out", None)),
        (JobStatus.CANCELLED, None, (409, None, None)),
        (JobStatus.FAILED, JobError(message="boom", type="decode_failed"), (500, None, None)),
        (
            JobStatus.FAILED,
            JobError(message="prompt: 9000 tokens and ...", type="invalid_request"),
            (400, None, "messages"),
        ),
    ],
)
def test_a_job_not_succeeded_within_the_wait_is_an_error_naming_it(
    status: JobStatus, error: JobError | None, answered: tuple[int, str | None, str | None]
) -> None:
    request = CompletionRequest(prompt="p")
    record = JobRecord(
        request_id="r-9",
        owner="o",
        model="m",
        status=status,
        attempts=1,
        request=request,
        created_at=1.0,
        updated_at=1.0,
        error=error,
    )
    job = OpenAIJob(kind="chat", model="m", request=request)
    answer = answer_for(SERVICES, job, record)
    detail = answer.body["error"]
    assert (answer.status, detail["code"], detail["param"]) == answered
    # The job exists: say which, and that resending would make another.
    assert detail["request_id"] == answer.request_id == "r-9" and answer.retry is False
