"""`Completion`: the LLM Engine client's interface, against Headrace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Literal, overload

from headrace.client import _control, _jobs
from headrace.client._config import ClientConfig, current_config
from headrace.client._http import new_session
from headrace.client._stream import stream_events
from headrace.client._sync import iterate_in_thread, run_sync
from headrace.client.batch import BatchItem, BatchResult, abatch_as_completed, abatch_create
from headrace.client.errors import BadRequestError
from headrace.client.responses import CompletionStreamResponse, CompletionSyncResponse
from headrace.core.contracts import JobView, Priority, SubmitResponse
from headrace.core.control import CancelResponse

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
        idempotency_key: str | None = ...,
        priority: Priority | None = ...,
        timeout_seconds: float | None = ...,
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
        idempotency_key: str | None = ...,
        priority: Priority | None = ...,
        timeout_seconds: float | None = ...,
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
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        timeout_seconds: float | None = None,
    ) -> CompletionSyncResponse | Iterator[CompletionStreamResponse]:
        """Complete `prompt`. Not streaming: wait for the response (sync route, else submit
        and poll with backoff). Streaming: an iterator of events over the WebSocket API.
        `idempotency_key`: a repeat with the same key and request gets the first one's job.
        `priority`: the lane ("interactive", the server's default, or "batch").
        `timeout_seconds`: the job's deadline on the server (TIMED_OUT past it); `timeout` is
        how long this call waits."""
        given = locals()
        fields = {k: v for k, v in given.items() if k not in _NOT_FIELDS}
        body = request_body(prompt, **fields)
        config, model = _target(model)
        if stream:
            complete = _complete_frame(model, body, idempotency_key)
            return iterate_in_thread(
                lambda: stream_events(config, complete=complete, time_limit=timeout)
            )
        return _jobs.complete(config, model, body, timeout, idempotency_key)

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
        idempotency_key: str | None = ...,
        priority: Priority | None = ...,
        timeout_seconds: float | None = ...,
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
        idempotency_key: str | None = ...,
        priority: Priority | None = ...,
        timeout_seconds: float | None = ...,
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
        idempotency_key: str | None = None,
        priority: Priority | None = None,
        timeout_seconds: float | None = None,
    ) -> CompletionSyncResponse | AsyncIterator[CompletionStreamResponse]:
        """`create`, awaited: `await Completion.acreate(...)`; with `stream=True` the result is
        an async iterator (`async for response in await Completion.acreate(...)`)."""
        given = locals()
        fields = {k: v for k, v in given.items() if k not in _NOT_FIELDS}
        body = request_body(prompt, **fields)
        config, model = _target(model)
        if stream:
            complete = _complete_frame(model, body, idempotency_key)
            return stream_events(config, complete=complete, time_limit=timeout)
        async with new_session() as session:
            return await _jobs.acomplete(session, config, model, body, timeout, idempotency_key)

    # ---- jobs -------------------------------------------------------------------------------

    @classmethod
    def submit(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> str:
        """Submit without waiting (the async route); returns the request_id to poll."""
        config, model = _target(model)
        return _jobs.submit(config, model, request_body(prompt, **fields), idempotency_key)

    @classmethod
    async def asubmit(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        *,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> str:
        config, model = _target(model)
        body = request_body(prompt, **fields)
        async with new_session() as session:
            return await _jobs.asubmit(session, config, model, body, idempotency_key)

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

    @classmethod
    def cancel(cls, request_id: str) -> CancelResponse:
        """Cancel a job: `status` CANCELLED if it had not started; else `cancelling` is True
        and it stops within moments, ending CANCELLED with its partial text (or SUCCEEDED if
        it finished first). A final job raises HeadraceClientError (409) naming its status."""
        return _control.cancel(current_config(), request_id)

    @classmethod
    async def acancel(cls, request_id: str) -> CancelResponse:
        async with new_session() as session:
            return await _control.acancel(session, current_config(), request_id)

    @classmethod
    def retry(cls, request_id: str) -> SubmitResponse:
        """Queue a FAILED or TIMED_OUT job again under the same request_id (a new allowance of
        attempts, a new stream); any other job raises HeadraceClientError (409)."""
        return _control.retry(current_config(), request_id)

    @classmethod
    async def aretry(cls, request_id: str) -> SubmitResponse:
        async with new_session() as session:
            return await _control.aretry(session, current_config(), request_id)

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


_NOT_FIELDS = frozenset({"cls", "model", "prompt", "timeout", "stream", "idempotency_key"})


def _complete_frame(model: str, body: dict[str, Any], key: str | None) -> dict[str, Any]:
    """The WebSocket `complete` frame's fields (frames have no headers: the key is a field)."""
    return {"model": model, **body, **({"idempotency_key": key} if key else {})}
