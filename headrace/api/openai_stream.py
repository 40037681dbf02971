"""`stream: true` on the OpenAI-compatible routes: OpenAI's server-sent events, followed from the
job's stored stream as the LLM Engine SSE route follows it (headrace.api.sse).

Each event of the job becomes a chunk with its text delta (and, asked for, its token's log prob);
the last is a chunk with the `finish_reason`, then (with `stream_options.include_usage`) a chunk
with `usage` and no choices, then `data: [DONE]`. A job that fails, is cancelled or passes its
deadline after streaming began ends with one `data: {"error": {...}}` event (which OpenAI's SDKs
raise as an APIError), then `data: [DONE]`. A streamed request has no sync wait: it follows the
job until its end (or the stream's own limit).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from headrace.api import idempotency, openai_chat, openai_protocol, openai_serving
from headrace.api.auth import api_key_from_headers, authenticate
from headrace.api.openai_responses import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    CompletionChoice,
    FinishReason,
    Usage,
    chat_logprobs,
    completion_logprobs,
    error_of,
    finish_reason,
)
from headrace.api.openai_serving import Kind, OpenAIJob
from headrace.api.services import ApiServices
from headrace.api.sse import follow_stored
from headrace.core.contracts import StreamEvent, StreamOutput, TokenOutput
from headrace.core.errors import HeadraceError

DONE = b"data: [DONE]\n\n"
_ERROR_CODES = {499: "cancelled", 504: "timed_out"}


def prepare(services: ApiServices, body: bytes, kind: Kind) -> OpenAIJob:
    """Parse and validate a request of either route into its job (chat: rendered)."""
    if kind == "chat":
        return openai_chat.chat_job(services, openai_protocol.parse_chat(body))
    return openai_serving.completion_job(services, openai_protocol.parse_completion(body))


@dataclass(frozen=True)
class OpenedStream:
    owner: str
    request_id: str
    job: OpenAIJob
    created: int

    @property
    def headers(self) -> dict[str, str]:
        return {
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-request-id": self.request_id,
        }


async def start(
    services: ApiServices, *, headers: Mapping[str, str], body: bytes, kind: Kind
) -> OpenedStream:
    """Authenticate, validate and submit; raises HeadraceError before anything is streamed."""
    owner = await asyncio.to_thread(authenticate, services, api_key_from_headers(headers))
    key = idempotency.key_from_headers(headers)
    job = await asyncio.to_thread(prepare, services, body, kind)
    submitted = await asyncio.to_thread(
        idempotency.submit, services, owner=owner, request=job.request, model=job.model, key=key
    )
    created = int(services.clock())
    return OpenedStream(owner=owner, request_id=submitted.request_id, job=job, created=created)


async def frames(
    services: ApiServices, opened: OpenedStream, *, timeout_seconds: float = 900.0
) -> AsyncIterator[bytes]:
    chunks = ChunkMaker(opened)
    if opened.job.kind == "chat":  # OpenAI's first chat chunk names the role
        yield _frame(chunks.chat(ChatDelta(role="assistant", content="")))
    try:
        async for event in follow_stored(
            services,
            owner=opened.owner,
            request_id=opened.request_id,
            timeout_seconds=timeout_seconds,
        ):
            for chunk in chunks.of(event):
                yield _frame(chunk)
    except HeadraceError as e:
        yield _frame(error_of(e.status_code, e.detail, request_id=opened.request_id).model_dump())
    yield DONE


def _frame(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()


@dataclass
class ChunkMaker:
    """OpenAI chunks of one job's events."""

    opened: OpenedStream
    text_offset: int = 0  # of the next token, in the text streamed so far (completions)

    def of(self, event: StreamEvent) -> list[dict[str, Any]]:
        output, job = event.output, self.opened.job
        chunks = []
        if output is not None and (output.text or (output.token and job.logprobs)):
            chunks.append(self._delta(output))
        if event.error is not None:  # a failure, or the end of a cancelled or timed-out job
            status, message = event.error.status_code, event.error.content.error
            code = _ERROR_CODES.get(status)
            error = error_of(status, message, request_id=self.opened.request_id, code=code)
            return [*chunks, error.model_dump()]
        if output is not None and output.finished:
            done = output.num_completion_tokens or 0
            reason = finish_reason(done, job.max_tokens)
            if job.kind == "chat":
                chunks.append(self.chat(ChatDelta(), finish=reason))
            else:
                chunks.append(self.completion("", finish=reason))
            if job.include_usage:
                chunks.append(self._usage(Usage.of(output.num_prompt_tokens, done)))
        return chunks

    def _delta(self, output: StreamOutput) -> dict[str, Any]:
        tokens = [output.token] if output.token and self.opened.job.logprobs else []
        if self.opened.job.kind == "chat":
            return self.chat(ChatDelta(content=output.text), logprobs=tokens)
        chunk = self.completion(output.text, logprobs=tokens)
        self.text_offset += sum(len(t.token) for t in tokens)
        return chunk

    def chat(
        self,
        delta: ChatDelta,
        *,
        logprobs: list[TokenOutput] | None = None,
        finish: FinishReason | None = None,
    ) -> dict[str, Any]:
        choice = ChatChunkChoice(
            delta=delta,
            logprobs=chat_logprobs(logprobs) if logprobs else None,
            finish_reason=finish,
        )
        dumped = self._dump(ChatCompletionChunk(**self._ids(), choices=[choice]))
        # As OpenAI sends them: a delta holds only what it sets (the last one is {}).
        dumped["choices"][0]["delta"] = delta.model_dump(exclude_none=True)
        return dumped

    def completion(
        self,
        text: str,
        *,
        logprobs: list[TokenOutput] | None = None,
        finish: FinishReason | None = None,
    ) -> dict[str, Any]:
        choice = CompletionChoice(
            text=text,
            logprobs=completion_logprobs(logprobs, self.text_offset) if logprobs else None,
            finish_reason=finish,
        )
        return self._dump(Completion(**self._ids(), choices=[choice]))

    def _usage(self, usage: Usage) -> dict[str, Any]:
        if self.opened.job.kind == "chat":
            return self._dump(ChatCompletionChunk(**self._ids(), choices=[], usage=usage))
        return self._dump(Completion(**self._ids(), choices=[], usage=usage))

    def _ids(self) -> dict[str, Any]:
        opened = self.opened
        return {"id": opened.request_id, "created": opened.created, "model": opened.job.model}

    def _dump(self, chunk: ChatCompletionChunk | Completion) -> dict[str, Any]:
        dumped = chunk.model_dump(mode="json")
        # OpenAI: with include_usage every chunk has `usage`, null but in the last; else none.
        if not self.opened.job.include_usage:
            dumped.pop("usage")
        return dumped
