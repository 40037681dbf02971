"""OpenAI's request schemas for `/v1/completions` and `/v1/chat/completions` (also under `/v2/`).

Every parameter of OpenAI's API is declared, so that an unknown name is a 400 naming it (as
OpenAI answers) and a known one the engine cannot honour is accepted only at its neutral value
(`NEUTRAL`): a value that would change the answer is a 400 naming the parameter, never ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headrace.core.contracts import MAX_TOP_K
from headrace.core.errors import InvalidRequest

_R = TypeVar("_R", bound=BaseModel)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = Field(
        default=None, description="A last chunk, before `data: [DONE]`, with `usage` and no choices"
    )
    # Random padding against a length side channel: it never changes the text, so it is
    # accepted and left out (the chunks carry no `obfuscation` field).
    include_obfuscation: bool | None = None


class SamplingRequest(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="A model of the zoo")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Most tokens to generate; 16 when unset"
    )
    temperature: float | None = Field(
        default=None,
        ge=0.0,
        le=2.0,
        description="The softmax temperature, passed to the engine unchanged (0: greedy); 1 "
        "when unset. Above 1 is a 400: the job contract (LLM Engine's range) stops at 1",
    )
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128, description="1 only")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop sequences")
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="0 only")
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="0 only")
    logit_bias: dict[str, float] | None = Field(default=None, description="Empty only")
    seed: int | None = Field(default=None, description="Not supported: leave it out")
    user: str | None = Field(
        default=None, max_length=256, description="Kept as the job's `metadata.user`"
    )
    # vLLM's extension (LLM Engine's v2 routes take it too): CTranslate2 honours it.
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOP_K)


class OpenAICompletionRequest(SamplingRequest):
    """`POST /v1/completions`."""

    prompt: str | list[str] = Field(description="One prompt (a list holding one string too)")
    suffix: str | None = Field(default=None, description="Not supported: leave it out")
    echo: bool | None = Field(default=None, description="false only")
    best_of: int | None = Field(default=None, ge=1, le=20, description="1 only")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=5,
        description="0: each generated token's log prob; above 0 (alternatives) is a 400",
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = Field(
        default=None, description="Text, or a list of text parts"
    )
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None


class OpenAIChatRequest(SamplingRequest):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="OpenAI's newer name for max_tokens"
    )
    logprobs: bool | None = Field(default=None, description="Each generated token's log prob")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="0 only")
    tools: list[dict[str, Any]] | None = Field(default=None, description="Empty only")
    tool_choice: str | dict[str, Any] | None = Field(default=None, description='"none" only')
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = Field(default=None, description="Empty only")
    function_call: str | dict[str, Any] | None = Field(default=None, description='"none" only')
    response_format: dict[str, Any] | None = Field(
        default=None, description='{"type": "text"} only'
    )
    store: bool | None = Field(default=None, description="false only")
    metadata: dict[str, str] | None = Field(
        default=None, description="Kept as the job's metadata (with `user`)"
    )
    service_tier: str | None = Field(default=None, description='"auto" or "default" only')
    modalities: list[str] | None = Field(default=None, description='["text"] only')
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None


def _is(value: object) -> Callable[[Any], bool]:
    return lambda given: bool(given == value)


def _empty(given: Any) -> bool:
    return not given


def _never(given: Any) -> bool:
    return False


def _any(given: Any) -> bool:
    return True


# Parameter -> (is this value neutral?, why another is refused). None is always neutral.
NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_is(1), "one choice per request: a job decodes one sequence"),
    "best_of": (_is(1), "one sequence per request: a job decodes one"),
    "presence_penalty": (_is(0), "CTranslate2 has no presence penalty"),
    "frequency_penalty": (_is(0), "CTranslate2 has no frequency penalty"),
    "logit_bias": (_empty, "CTranslate2's generate_batch exposes no logits to bias"),
    "seed": (_never, "a job's sampling cannot be seeded per request"),
    "suffix": (_is(""), "insertion (text after the completion) is not supported"),
    "echo": (_is(False), "the prompt is not echoed"),
    "tools": (_empty, "tool calling is not supported"),
    "tool_choice": (_is("none"), "tool calling is not supported"),
    "parallel_tool_calls": (_any, ""),  # meaningless without tools
    "functions": (_empty, "function calling is not supported"),
    "function_call": (_is("none"), "function calling is not supported"),
    "response_format": (_is({"type": "text"}), "structured output is not supported"),
    "store": (_is(False), "completions are not stored for OpenAI's evals"),
    "service_tier": (lambda given: given in ("auto", "default"), "one service tier"),
    "modalities": (_is(["text"]), "text only"),
    "audio": (_never, "text only"),
    "prediction": (_never, "predicted outputs are not supported"),
    "reasoning_effort": (_never, "not a reasoning model"),
    "verbosity": (_never, "not supported"),
    "web_search_options": (_never, "web search is not supported"),
}


def check_neutral(request: SamplingRequest) -> None:
    """A 400 naming the first parameter set to a value the engine cannot honour."""
    for name, (neutral, reason) in NEUTRAL.items():
        value = getattr(request, name, None)
        if value is not None and not neutral(value):
            raise InvalidRequest(f"{name}: not supported ({reason})")


def parse_completion(body: bytes) -> OpenAICompletionRequest:
    return _parse(OpenAICompletionRequest, body)


def parse_chat(body: bytes) -> OpenAIChatRequest:
    return _parse(OpenAIChatRequest, body)


def _parse(model: type[_R], body: bytes) -> _R:
    """Every failure is an InvalidRequest naming the parameter; a body that is not JSON too
    (OpenAI answers 400 for it, where LLM Engine's routes answer 422)."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidRequest("body: not valid JSON") from e
        raise InvalidRequest(_describe(first)) from e


# Pydantic names the member of a union a value failed in the error's location ("prompt.str"):
# OpenAI's parameter is what the location holds without them.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _describe(error: Any) -> str:
    parts = [
        str(part)
        for part in error["loc"]
        if not (isinstance(part, str) and (part in _UNION_MEMBERS or "[" in part))
    ]
    location = ".".join(parts) or "body"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown parameter"
    if error["type"] == "missing":
        return f"{location}: field required"
    return f"{location}: {error['msg']}"
