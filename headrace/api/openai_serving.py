"""The OpenAI-compatible routes' work: an OpenAI request becomes a job like any other (recorded,
queued, retried, counted, in the job view under the `id` the answer carries), and a job's
result becomes OpenAI's answer.

How parameters map onto the job: `max_tokens` (`max_completion_tokens` in chat) is
`max_new_tokens`, 16 when unset (OpenAI's completions default; its chat default, the rest of
the context, needs the prompt's tokens, which only a worker counts). `temperature` is the same
softmax temperature in both APIs and passes unchanged, 1 when unset (OpenAI's default); above 1
is a 400, since the job contract keeps LLM Engine's [0, 1]. `top_p` passes unchanged (below
1e-6 it keeps the most likely token alone, as 1e-6 does), `stop` is `stop_sequences` (the stop
text left out, as OpenAI does), `logprobs` (0 in completions, true in chat) is
`return_token_log_probs`, `user` (and chat's `metadata`) the job's `metadata`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from headrace.api import completions, idempotency
from headrace.api.openai_protocol import (
    OpenAICompletionRequest,
    SamplingRequest,
    check_neutral,
)
from headrace.api.openai_responses import (
    ModelCard,
    ModelList,
    chat_completion,
    completion,
    error_of,
)
from headrace.api.services import ApiServices
from headrace.core.contracts import (
    MIN_TOP_P,
    CompletionOutput,
    CompletionRequest,
    JobStatus,
    describe_validation_error,
)
from headrace.core.errors import InvalidRequest, NotFound, PayloadTooLarge
from headrace.core.tables.jobs import JobRecord

DEFAULT_MAX_TOKENS = 16
Kind = Literal["completion", "chat"]


@dataclass(frozen=True)
class OpenAIJob:
    """An OpenAI request, validated and made a job request."""

    kind: Kind
    model: str
    request: CompletionRequest
    stream: bool = False
    include_usage: bool = False

    @property
    def max_tokens(self) -> int:
        return self.request.max_new_tokens

    @property
    def logprobs(self) -> bool:
        return bool(self.request.return_token_log_probs)


@dataclass(frozen=True)
class Answer:
    """What a non-streamed request answers: a status and OpenAI's body."""

    status: int
    body: dict[str, Any]
    request_id: str | None = None
    # OpenAI's SDKs resend a request that answered 409 or 5xx unless told not to: a resend
    # would make another job, where this one's result is still to be had by polling it.
    retry: bool | None = None


def resolve_model(services: ApiServices, model: str) -> str:
    if model not in services.settings.model_zoo:
        raise NotFound(f"model: {model!r} is not a model of the zoo; GET /v1/models lists them")
    return model


def check_sampling(
    services: ApiServices, sampling: SamplingRequest, max_tokens: int | None
) -> tuple[list[str], int]:
    """The stop sequences and max_new_tokens of an OpenAI request; a 400 naming the parameter
    (by its OpenAI name) for a value the engine cannot honour."""
    check_neutral(sampling)
    settings = services.settings
    if sampling.temperature is not None and sampling.temperature > 1.0:
        raise InvalidRequest(
            "temperature: at most 1 here (the job contract is LLM Engine's [0, 1]; the engine"
            " takes the same softmax temperature, which is never rescaled)"
        )
    stops = [sampling.stop] if isinstance(sampling.stop, str) else list(sampling.stop or [])
    if len(stops) > settings.max_stop_sequences:
        raise InvalidRequest(f"stop: at most {settings.max_stop_sequences} stop sequences")
    if any(not stop for stop in stops):
        raise InvalidRequest("stop: stop sequences must be non-empty strings")
    new_tokens = max_tokens or DEFAULT_MAX_TOKENS
    if new_tokens > settings.max_new_tokens_limit:
        raise InvalidRequest(
            f"max_tokens: {new_tokens} exceeds the limit of {settings.max_new_tokens_limit}"
        )
    return stops, new_tokens


def job_request(
    services: ApiServices,
    sampling: SamplingRequest,
    *,
    prompt: str,
    prompt_param: str,
    max_tokens: int | None,
    logprobs: bool,
    metadata: dict[str, Any] | None = None,
) -> CompletionRequest:
    """The job for an OpenAI request (check_sampling's refusals, and a 413 naming
    `prompt_param` for a prompt over the limit)."""
    stops, new_tokens = check_sampling(services, sampling, max_tokens)
    prompt_bytes = len(prompt.encode())
    if prompt_bytes > services.settings.max_prompt_bytes:
        raise PayloadTooLarge(
            f"{prompt_param}: {prompt_bytes} bytes of prompt exceed the limit of"
            f" {services.settings.max_prompt_bytes}"
        )
    if sampling.user is not None:
        metadata = {**(metadata or {}), "user": sampling.user}
    try:
        return CompletionRequest(
            model=sampling.model,
            prompt=prompt,
            max_new_tokens=new_tokens,
            temperature=1.0 if sampling.temperature is None else sampling.temperature,
            stop_sequences=stops or None,
            return_token_log_probs=logprobs,
            top_p=None if sampling.top_p is None else max(sampling.top_p, MIN_TOP_P),
            top_k=sampling.top_k,
            metadata=metadata,
        )
    except ValidationError as e:
        detail = describe_validation_error(e)
        raise InvalidRequest(detail.replace("prompt: ", f"{prompt_param}: ", 1)) from e


def completion_job(services: ApiServices, request: OpenAICompletionRequest) -> OpenAIJob:
    model = resolve_model(services, request.model)
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if len(prompts) != 1:
        raise InvalidRequest("prompt: one prompt per request (a string, or a list of one)")
    if request.logprobs:
        raise InvalidRequest(
            "logprobs: at most 0 (each generated token's log prob): the engine gives no"
            " alternatives"
        )
    job = job_request(
        services,
        request,
        prompt=prompts[0],
        prompt_param="prompt",
        max_tokens=request.max_tokens,
        logprobs=request.logprobs is not None,
    )
    return openai_job(job, "completion", model, request)


def openai_job(
    request: CompletionRequest, kind: Kind, model: str, sampling: SamplingRequest
) -> OpenAIJob:
    options = sampling.stream_options
    if options is not None and not sampling.stream:
        raise InvalidRequest("stream_options: only with stream: true")
    return OpenAIJob(
        kind=kind,
        model=model,
        request=request,
        stream=bool(sampling.stream),
        include_usage=bool(options and options.include_usage),
    )


def answer(
    services: ApiServices, *, owner: str, job: OpenAIJob, key: idempotency.IdempotencyKey | None
) -> Answer:
    """Submit the job and wait for it up to the sync wait."""
    submitted = idempotency.submit(
        services, owner=owner, request=job.request, model=job.model, key=key
    )
    record = completions.wait_for_final(
        services,
        owner=owner,
        request_id=submitted.request_id,
        timeout=services.settings.sync_wait_seconds,
    )
    return answer_for(services, job, record)


def answer_for(services: ApiServices, job: OpenAIJob, record: JobRecord) -> Answer:
    request_id = record.request_id
    if record.status is JobStatus.SUCCEEDED and record.output is not None:
        output = CompletionOutput.model_validate(record.output)
        build = chat_completion if job.kind == "chat" else completion
        body = build(request_id, record.created_at, job.model, output, job.max_tokens)
        return Answer(200, body.model_dump(mode="json"), request_id)
    if record.status is JobStatus.FAILED:
        error = record.error
        if error is not None and error.type == "invalid_request":  # only a worker could tell
            message = error.message
            if job.kind == "chat":
                message = message.replace("prompt: ", "messages: ", 1)
            return _error(400, message, request_id)
        reason = error.message if error is not None else "no reason recorded"
        return _error(500, f"the job failed: {reason}", request_id)
    if record.status is JobStatus.CANCELLED:
        return _error(409, "cancelled: the job was stopped at its owner's request", request_id)
    if record.status is JobStatus.TIMED_OUT:
        return _error(504, "timed out: the job passed its deadline", request_id, "timed_out")
    wait = services.settings.sync_wait_seconds
    return _error(
        504,
        f"the job is still {record.status.value} after {wait:g} s: poll GET"
        f" /v1/llm/completions/{request_id} for its result (a streamed request has no such"
        " limit)",
        request_id,
        "request_pending",
    )


def _error(status: int, message: str, request_id: str, code: str | None = None) -> Answer:
    body = error_of(status, message, request_id=request_id, code=code)
    return Answer(status, body.model_dump(mode="json"), request_id, retry=False)


def model_list(services: ApiServices) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in sorted(services.settings.model_zoo)])


def model_card(services: ApiServices, name: str) -> ModelCard:
    return ModelCard(id=resolve_model(services, name))
