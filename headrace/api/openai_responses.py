"""OpenAI's response schemas: completions, chat completions, their stream chunks, the model
list and errors, built from a job's output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from headrace.core.contracts import CompletionOutput, TokenOutput
from headrace.core.errors import HeadraceError

# "length": the job generated max_tokens tokens (a stop sequence met at that very token reads as
# "length" too); "stop": it ended before, at the end token or a stop sequence.
FinishReason = Literal["stop", "length"]

_ID = "The job's request_id: GET /v1/llm/completions/{id} shows the job"
_CREATED = "When the job was submitted (Unix seconds)"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int | None, completion_tokens: int) -> Usage:
        prompt = prompt_tokens or 0
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            total_tokens=prompt + completion_tokens,
        )


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: None = Field(default=None, description="The engine gives no alternatives")
    text_offset: list[int] = Field(description="Each token's offset in the generated text")


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class Completion(BaseModel):
    """A completion, and (with `stream: true`) each chunk of one."""

    id: str = Field(description=_ID)
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description=_CREATED)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict[str, Any]] = Field(
        default_factory=list, description="Always empty: the engine gives no alternatives"
    )


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str = Field(description=_ID)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description=_CREATED)
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str = Field(description=_ID)
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(description=_CREATED)
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: None = None


class ModelCard(BaseModel):
    id: str = Field(description="The model's name in the zoo")
    object: Literal["model"] = "model"
    created: int = Field(default=0, description="Not recorded: 0")
    owned_by: str = "headrace"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, requests (429) or server_error")
    param: str | None = Field(default=None, description="The parameter at fault, if one is")
    code: str | None = None
    request_id: str | None = Field(
        default=None,
        description="Headrace's: the job this request made, when it made one (poll it at "
        "GET /v1/llm/completions/{request_id})",
    )


class OpenAIError(BaseModel):
    """Every error of the OpenAI-compatible routes, in OpenAI's shape."""

    error: OpenAIErrorDetail


def finish_reason(num_completion_tokens: int, max_tokens: int) -> FinishReason:
    return "length" if num_completion_tokens >= max_tokens else "stop"


def completion_logprobs(tokens: list[TokenOutput], offset: int = 0) -> CompletionLogprobs:
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.token)
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.log_prob for t in tokens],
        text_offset=offsets,
    )


def chat_logprobs(tokens: list[TokenOutput]) -> ChatLogprobs:
    return ChatLogprobs(
        content=[
            TokenLogprob(token=t.token, logprob=t.log_prob, bytes=list(t.token.encode()))
            for t in tokens
        ]
    )


def completion(
    request_id: str, created: float, model: str, output: CompletionOutput, max_tokens: int
) -> Completion:
    tokens = output.tokens
    choice = CompletionChoice(
        text=output.text,
        logprobs=completion_logprobs(tokens) if tokens is not None else None,
        finish_reason=finish_reason(output.num_completion_tokens, max_tokens),
    )
    return Completion(
        id=request_id,
        created=int(created),
        model=model,
        choices=[choice],
        usage=Usage.of(output.num_prompt_tokens, output.num_completion_tokens),
    )


def chat_completion(
    request_id: str, created: float, model: str, output: CompletionOutput, max_tokens: int
) -> ChatCompletion:
    tokens = output.tokens
    choice = ChatChoice(
        message=AssistantMessage(content=output.text),
        logprobs=chat_logprobs(tokens) if tokens is not None else None,
        finish_reason=finish_reason(output.num_completion_tokens, max_tokens),
    )
    return ChatCompletion(
        id=request_id,
        created=int(created),
        model=model,
        choices=[choice],
        usage=Usage.of(output.num_prompt_tokens, output.num_completion_tokens),
    )


_CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large"}


def error_of(
    status: int, message: str, *, request_id: str | None = None, code: str | None = None
) -> OpenAIError:
    """OpenAI's error for a status and Headrace's detail; a detail `name: reason` names the
    parameter `name` (every validation error of Headrace's reads so)."""
    if status == 429:
        kind = "requests"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    name, colon, _ = message.partition(": ")
    param = name if colon and " " not in name and status in (400, 404, 413, 422) else None
    if status == 404 and param == "model":
        code = code or "model_not_found"
    detail = OpenAIErrorDetail(
        message=message,
        type=kind,
        param=param,
        code=code or _CODES.get(status),
        request_id=request_id,
    )
    return OpenAIError(error=detail)


def error_from(e: HeadraceError, *, request_id: str | None = None) -> OpenAIError:
    return error_of(e.status_code, e.detail, request_id=request_id)
