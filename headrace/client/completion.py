"""`Completion`: the LLM Engine client's interface, against Headrace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Literal, overload

from headrace.client import _jobs
from headrace.client._config import ClientConfig, current_config
from headrace.client._http import new_session
from headrace.client._stream import stream_events
from headrace.client._sync import iterate_in_thread, run_sync
from headrace.client.batch import BatchItem, BatchResult, abatch_as_completed, abatch_create
from headrace.client.errors import BadRequestError
from headrace.client.responses import CompletionStreamResponse, CompletionSyncResponse
from headrace.core.contracts import JobView

DEFAULT_TIMEOUT = 300.0


def request_body(prompt: str | None, **fields: Any) -> dict[str, Any]:
    """The request body: the fields that were given (None and a False log-probs flag mean
    "the server's default" and are left out)."""
    if not prompt:
        raise BadRequestError("prompt: field required", 400)
    body = {"prompt": prompt, **{k: v for k, v in fields.items() if v is not None}}
    if body.get("return_token_log_probs") is False:
        del body["return_token_log_probs"]
    return body


def _target(model: str | None) -> tuple[ClientConfig, str]:
    config = current_config()
    return config, model or config.default_model


class Completion:
    """Completions, as `llmengine.Completion`: `create`, `acreate`, streaming, plus `submit`,
    `get`, `stream_existing` and `batch_create`. Configure with `headrace.client.configure`
    or HEADRACE_BASE_URL / HEADRACE_WS_URL / HEADRACE_API_KEY. `model=None`: the default."""

    @overload
    @classmethod
    def create(
        cls,
        model: str | None = ...,
        prompt: str | None = ...,
        max_new_tokens: int = ...,
        temperature: float = ...,
        stop_sequences: list[str] | None = ...,
        return_token_log_probs: bool | None = ...,
        presence_penalty: float | None = ...,
        frequency_penalty: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        include_stop_str_in_output: bool | None = ...,
        guided_json: dict[str, Any] | None = ...,
        guided_regex: str | None = ...,
        guided_choice: list[str] | None = ...,
        guided_grammar: str | None = ...,
        timeout: float = ...,
        stream: Literal[False] = ...,
        skip_special_tokens: bool | None = ...,
    ) -> CompletionSyncResponse: ...

    @overload
    @classmethod
    def create(
        cls,
        model: str | None = ...,
        prompt: str | None = ...,
        max_new_tokens: int = ...,
        temperature: float = ...,
        stop_sequences: list[str] | None = ...,
        return_token_log_probs: bool | None = ...,
        presence_penalty: float | None = ...,
        frequency_penalty: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        include_stop_str_in_output: bool | None = ...,
        guided_json: dict[str, Any] | None = ...,
        guided_regex: str | None = ...,
        guided_choice: list[str] | None = ...,
        guided_grammar: str | None = ...,
        timeout: float = ...,
        *,
        stream: Literal[True],
        skip_special_tokens: bool | None = ...,
    ) -> Iterator[CompletionStreamResponse]: ...

    @classmethod
    def create(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        stream: bool = False,
        skip_special_tokens: bool | None = None,
    ) -> CompletionSyncResponse | Iterator[CompletionStreamResponse]:
        """Complete `prompt`. Not streaming: wait for the response (sync route, else submit
        and poll with backoff). Streaming: an iterator of events over the WebSocket API."""
        given = locals()
        fields = {k: v for k, v in given.items() if k not in _NOT_FIELDS}
        body = request_body(prompt, **fields)
        config, model = _target(model)
        if stream:
            complete = {"model": model, **body}
            return iterate_in_thread(
                lambda: stream_events(config, complete=complete, time_limit=timeout)
            )
        return _jobs.complete(config, model, body, timeout)

    @overload
    @classmethod
    async def acreate(
        cls,
        model: str | None = ...,
        prompt: str | None = ...,
        max_new_tokens: int = ...,
        temperature: float = ...,
        stop_sequences: list[str] | None = ...,
        return_token_log_probs: bool | None = ...,
        presence_penalty: float | None = ...,
        frequency_penalty: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        include_stop_str_in_output: bool | None = ...,
        guided_json: dict[str, Any] | None = ...,
        guided_regex: str | None = ...,
        guided_choice: list[str] | None = ...,
        guided_grammar: str | None = ...,
        timeout: float = ...,  # noqa: ASYNC109 (LLM Engine's signature)
        stream: Literal[False] = ...,
        skip_special_tokens: bool | None = ...,
    ) -> CompletionSyncResponse: ...

    @overload
    @classmethod
    async def acreate(
        cls,
        model: str | None = ...,
        prompt: str | None = ...,
        max_new_tokens: int = ...,
        temperature: float = ...,
        stop_sequences: list[str] | None = ...,
        return_token_log_probs: bool | None = ...,
        presence_penalty: float | None = ...,
        frequency_penalty: float | None = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        include_stop_str_in_output: bool | None = ...,
        guided_json: dict[str, Any] | None = ...,
        guided_regex: str | None = ...,
        guided_choice: list[str] | None = ...,
        guided_grammar: str | None = ...,
        timeout: float = ...,  # noqa: ASYNC109
        *,
        stream: Literal[True],
        skip_special_tokens: bool | None = ...,
    ) -> AsyncIterator[CompletionStreamResponse]: ...

    @classmethod
    async def acreate(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        stream: bool = False,
        skip_special_tokens: bool | None = None,
    ) -> CompletionSyncResponse | AsyncIterator[CompletionStreamResponse]:
        """`create`, awaited: `await Completion.acreate(...)`; with `stream=True` the result is
        an async iterator (`async for response in await Completion.acreate(...)`)."""
        given = locals()
        fields = {k: v for k, v in given.items() if k not in _NOT_FIELDS}
        body = request_body(prompt, **fields)
        config, model = _target(model)
        if stream:
            return stream_events(config, complete={"model": model, **body}, time_limit=timeout)
        async with new_session() as session:
            return await _jobs.acomplete(session, config, model, body, timeout)

    # ---- jobs -------------------------------------------------------------------------------

    @classmethod
    def submit(cls, model: str | None = None, prompt: str | None = None, **fields: Any) -> str:
        """Submit without waiting (the async route); returns the request_id to poll."""
        config, model = _target(model)
        return _jobs.submit(config, model, request_body(prompt, **fields))

    @classmethod
    async def asubmit(
        cls, model: str | None = None, prompt: str | None = None, **fields: Any
    ) -> str:
        config, model = _target(model)
        async with new_session() as session:
            return await _jobs.asubmit(session, config, model, request_body(prompt, **fields))

    @classmethod
    def get(cls, request_id: str) -> JobView:
        """The job: status, model, attempts, timestamps, and output or error."""
        return _jobs.get(current_config(), request_id)

    @classmethod
    async def aget(cls, request_id: str) -> JobView:
        async with new_session() as session:
            return await _jobs.aget(session, current_config(), request_id)

    @classmethod
    def wait(cls, request_id: str, timeout: float = DEFAULT_TIMEOUT) -> CompletionSyncResponse:
        """Poll a submitted job with backoff until it is final; its response or its error."""
        return _jobs.result_of(_jobs.wait(current_config(), request_id, timeout), timeout)

    @classmethod
    def stream_existing(
        cls, request_id: str, from_seq: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> Iterator[CompletionStreamResponse]:
        """Follow a job submitted elsewhere, from event `from_seq` on."""
        config = current_config()
        return iterate_in_thread(
            lambda: stream_events(
                config, request_id=request_id, from_seq=from_seq, time_limit=timeout
            )
        )

    @classmethod
    def astream_existing(
        cls, request_id: str, from_seq: int = 0, timeout: float = DEFAULT_TIMEOUT
    ) -> AsyncIterator[CompletionStreamResponse]:
        return stream_events(
            current_config(), request_id=request_id, from_seq=from_seq, time_limit=timeout
        )

    # ---- many -------------------------------------------------------------------------------

    @classmethod
    def batch_create(
        cls,
        items: Iterable[BatchItem],
        *,
        model: str | None = None,
        concurrency: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
        **defaults: Any,
    ) -> list[BatchResult]:
        """Complete many prompts (strings, or mappings of request fields) with at most
        `concurrency` in flight. Results come in input order; each carries its own error."""
        items = list(items)
        return run_sync(
            lambda: abatch_create(
                items, model=model, concurrency=concurrency, timeout=timeout, **defaults
            )
        )

    @classmethod
    async def abatch_create(
        cls,
        items: Iterable[BatchItem],
        *,
        model: str | None = None,
        concurrency: int = 8,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        **defaults: Any,
    ) -> list[BatchResult]:
        return await abatch_create(
            items, model=model, concurrency=concurrency, timeout=timeout, **defaults
        )

    # The results as they finish (any order), e.g. to write them out as they come.
    abatch_as_completed = staticmethod(abatch_as_completed)


_NOT_FIELDS = frozenset({"cls", "model", "prompt", "timeout", "stream"})
