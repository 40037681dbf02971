"""Chat requests: OpenAI's messages, rendered with the model's chat template into a job's prompt.

Messages are passed to the template as transformers passes them (`role`, `content`, `name`),
with two of OpenAI's forms made plain: a `developer` message is a `system` one (OpenAI's newer
name for it, which templates do not know), and content given as a list of text parts is their
texts joined by newlines (as vLLM does). Tool and function messages and calls, and parts that
are not text, are a 400 naming the message.
"""

from __future__ import annotations

from typing import Any

from headrace.api import chat_templates
from headrace.api.openai_protocol import ChatMessage, OpenAIChatRequest
from headrace.api.openai_serving import (
    OpenAIJob,
    check_sampling,
    job_request,
    openai_job,
    resolve_model,
)
from headrace.api.services import ApiServices
from headrace.core.errors import InvalidRequest


def chat_job(services: ApiServices, request: OpenAIChatRequest) -> OpenAIJob:
    model = resolve_model(services, request.model)
    if request.top_logprobs:
        raise InvalidRequest(
            "top_logprobs: at most 0: the engine gives each generated token's log prob, no"
            " alternatives"
        )
    max_tokens = request.max_completion_tokens or request.max_tokens
    check_sampling(services, request, max_tokens)  # before reading the model's template
    messages = [_template_message(i, m) for i, m in enumerate(request.messages)]
    prompt = chat_templates.render_prompt(services, model, messages)
    job = job_request(
        services,
        request,
        prompt=prompt,
        prompt_param="messages",
        max_tokens=max_tokens,
        logprobs=bool(request.logprobs),
        metadata=dict(request.metadata) if request.metadata else None,
    )
    return openai_job(job, "chat", model, request)


def _template_message(index: int, message: ChatMessage) -> dict[str, Any]:
    where = f"messages.{index}"
    if message.role in ("tool", "function"):
        raise InvalidRequest(f"{where}.role: {message.role} messages are not supported (no tools)")
    for name in ("tool_calls", "function_call", "audio"):
        if getattr(message, name):
            raise InvalidRequest(f"{where}.{name}: not supported (text only, no tools)")
    if message.refusal is not None:
        raise InvalidRequest(f"{where}.refusal: not supported: give the text as content")
    if message.content is None:
        raise InvalidRequest(f"{where}.content: field required")
    rendered: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": _text(where, message.content),
    }
    if message.name is not None:
        rendered["name"] = message.name
    return rendered


def _text(where: str, content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        text = part.get("text")
        if part.get("type") != "text" or not isinstance(text, str) or set(part) - {"type", "text"}:
            raise InvalidRequest(
                f"{where}.content.{i}: only text parts ({{'type': 'text', 'text': ...}})"
            )
        texts.append(text)
    return "\n".join(texts)
