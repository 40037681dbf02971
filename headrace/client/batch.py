"""Many completions at once: bounded concurrency, results in input order, errors per item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from headrace.client._config import ClientConfig, current_config
from headrace.client._http import new_session
from headrace.client._jobs import asubmit, await_final, halted_error, result_of
from headrace.client.errors import (
    BadRequestError,
    HeadraceClientError,
    HeadraceConnectionError,
    UnauthorizedError,
    job_failed_error,
)
from headrace.client.responses import CompletionSyncResponse
from headrace.core.contracts import JobStatus

if TYPE_CHECKING:
    import aiohttp

BatchItem = str | Mapping[str, Any]
BatchStatus = Literal["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "ERROR"]
FINAL_STATUSES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"})
# A rejected submission is final: the same request would be rejected again.
_REJECTED = frozenset({400, 404, 413, 422})


@dataclass
class BatchResult:
    """One item's outcome. `status` ERROR means no final answer (unreachable API, timeout,
    throttled): trying again may succeed. FAILED, CANCELLED and TIMED_OUT are the job's own
    end."""

    index: int
    status: BatchStatus = "ERROR"
    request_id: str | None = None
    response: CompletionSyncResponse | None = None
    error: HeadraceClientError | None = None

    @property
    def ok(self) -> bool:
        return self.response is not None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


def split_item(
    item: BatchItem, model: str, defaults: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """(model, request body) of an item: a prompt, or a mapping of request fields."""
    if isinstance(item, str):
        fields: dict[str, Any] = {"prompt": item}
    elif isinstance(item, Mapping):
        fields = dict(item)
    else:
        raise BadRequestError(f"expected a prompt or a mapping of request fields, not {item!r}")
    item_model = fields.pop("model", None) or model
    body = {k: v for k, v in {**defaults, **fields}.items() if v is not None}
    return str(item_model), body


def is_fatal(error: HeadraceClientError | None) -> bool:
    """Errors every other item would hit too: stop submitting."""
    if isinstance(error, HeadraceConnectionError):
        return error.refused
    return isinstance(error, UnauthorizedError)


async def _run_one(
    session: aiohttp.ClientSession,
    config: ClientConfig,
    index: int,
    item: BatchItem,
    model: str,
    defaults: Mapping[str, Any],
    time_limit: float,
) -> BatchResult:
    try:
        item_model, body = split_item(item, model, defaults)
        request_id = await asubmit(session, config, item_model, body)
    except HeadraceClientError as e:
        status: BatchStatus = "FAILED" if e.status_code in _REJECTED else "ERROR"
        return BatchResult(index, status, error=e)
    result = BatchResult(index, request_id=request_id)
    try:
        job = await await_final(session, config, request_id, time_limit)
        if job.status is JobStatus.FAILED:
            result.status, result.error = "FAILED", job_failed_error(request_id, job.error)
        elif job.status is JobStatus.CANCELLED or job.status is JobStatus.TIMED_OUT:
            result.status = "CANCELLED" if job.status is JobStatus.CANCELLED else "TIMED_OUT"
            result.error = halted_error(request_id, job.status)
        else:
            result.response = result_of(job, time_limit)  # raises a timeout error if not final
            result.status = "SUCCEEDED"
    except HeadraceClientError as e:
        result.error = e
    return result


async def abatch_as_completed(
    items: Iterable[BatchItem],
    *,
    model: str | None = None,
    concurrency: int = 8,
    timeout: float = 300.0,  # noqa: ASYNC109 (a per-item limit, not a deadline for the call)
    config: ClientConfig | None = None,
    **defaults: Any,
) -> AsyncIterator[BatchResult]:
    """Submit every item (at most `concurrency` in flight) and yield results as they finish.

    `defaults` are request fields for every item (an item's own fields win). After an error
    every item would hit (a bad API key, an API that refuses connections) nothing more is
    submitted: the remaining items come back with that error and status ERROR.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    config = config or current_config()
    default_model = model or config.default_model
    results: asyncio.Queue[BatchResult | None] = asyncio.Queue()
    source = enumerate(items)
    fatal: list[HeadraceClientError] = []

    async with new_session() as session:

        async def worker() -> None:
            for index, item in source:
                if fatal:
                    result = BatchResult(index, error=fatal[0])
                else:
                    result = await _run_one(
                        session, config, index, item, default_model, defaults, timeout
                    )
                    if is_fatal(result.error) and result.error is not None:
                        fatal.append(result.error)
                await results.put(result)

        async def run_workers() -> None:
            try:
                await asyncio.gather(*(worker() for _ in range(concurrency)))
            finally:
                await results.put(None)

        runner = asyncio.create_task(run_workers())
        try:
            while (result := await results.get()) is not None:
                yield result
            await runner  # an unexpected error (e.g. from the items iterable) surfaces here
        finally:
            runner.cancel()
            await asyncio.wait([runner])


async def abatch_create(
    items: Iterable[BatchItem],
    *,
    model: str | None = None,
    concurrency: int = 8,
    timeout: float = 300.0,  # noqa: ASYNC109 (a per-item limit, not a deadline for the call)
    **defaults: Any,
) -> list[BatchResult]:
    """Every item's result, in input order; errors are captured per item, never raised."""
    found = [
        result
        async for result in abatch_as_completed(
            items, model=model, concurrency=concurrency, timeout=timeout, **defaults
        )
    ]
    return sorted(found, key=lambda result: result.index)
