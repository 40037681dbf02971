"""Submit, look up and wait for jobs over HTTP: the non-streaming paths, sync and async."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from headrace.client._config import ClientConfig
from headrace.client._http import arequest, request
from headrace.client.errors import (
    CompletionTimeoutError,
    HeadraceClientError,
    ServerError,
    job_failed_error,
)
from headrace.client.responses import CompletionSyncResponse, job_view
from headrace.core import routes
from headrace.core.contracts import JobStatus, JobView

if TYPE_CHECKING:
    import aiohttp

ASYNC_PATH = routes.COMPLETIONS_ASYNC
SYNC_PATH = routes.COMPLETIONS_SYNC
JOB_PATH = routes.COMPLETION
MODELS_PATH = routes.MODEL_ENDPOINTS

# The sync route holds a request up to 25 s (under API Gateway's 30 s); shorter timeouts
# submit and poll instead, so the caller's timeout is honoured.
SYNC_ROUTE_MIN_TIMEOUT = 35.0
SYNC_ROUTE_HTTP_TIMEOUT = 35.0
SUBMIT_HTTP_TIMEOUT = 30.0
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0


def query_for(model: str) -> dict[str, str]:
    return {"model_endpoint_name": model}


def job_path(request_id: str) -> str:
    return JOB_PATH.format(request_id=quote(request_id, safe=""))


def result_of(job: JobView, time_limit: float) -> CompletionSyncResponse:
    """The response of a final job; the error it ended with; or a timeout error if not final."""
    if job.status is JobStatus.SUCCEEDED:
        return CompletionSyncResponse.model_validate(
            {"request_id": job.request_id, "output": job.output}
        )
    if job.status is JobStatus.FAILED:
        raise job_failed_error(job.request_id, job.error)
    if job.status.is_halted:
        raise halted_error(job.request_id, job.status)
    raise CompletionTimeoutError(
        f"request {job.request_id} did not finish within {time_limit:g}s"
        f" (it is {job.status.value}); poll it with Completion.get({job.request_id!r})",
        request_id=job.request_id,
    )


def halted_error(request_id: str, status: JobStatus) -> HeadraceClientError:
    """The error of a job stopped before its end: cancelled (409), or not finished within its
    timeout_seconds (504). Its partial output is in Completion.get(request_id).output."""
    partial = f"; its partial output is in Completion.get({request_id!r}).output"
    if status is JobStatus.CANCELLED:
        return HeadraceClientError(f"request {request_id} was cancelled{partial}", 409)
    return HeadraceClientError(
        f"request {request_id} timed out: not finished within its timeout_seconds{partial}", 504
    )


def _submitted_id(answer: Any) -> str:
    if not isinstance(answer, dict) or not isinstance(answer.get("request_id"), str):
        raise ServerError(f"the API answered without a request_id: {answer!r:.200}")
    return str(answer["request_id"])


def _next_pause(pause: float, deadline: float) -> float:
    return max(min(pause, deadline - time.monotonic()), 0.0)


def key_header(idempotency_key: str | None) -> dict[str, str] | None:
    return {"Idempotency-Key": idempotency_key} if idempotency_key else None


# ---- synchronous ------------------------------------------------------------------------------


def submit(
    config: ClientConfig, model: str, body: dict[str, Any], idempotency_key: str | None = None
) -> str:
    _, answer = request(
        config,
        "POST",
        ASYNC_PATH,
        query=query_for(model),
        body=body,
        time_limit=SUBMIT_HTTP_TIMEOUT,
        headers=key_header(idempotency_key),
    )
    return _submitted_id(answer)


def get(config: ClientConfig, request_id: str) -> JobView:
    _, answer = request(config, "GET", job_path(request_id))
    return job_view(answer)


def wait(config: ClientConfig, request_id: str, time_limit: float) -> JobView:
    deadline = time.monotonic() + time_limit
    pause = FIRST_POLL_SECONDS
    while True:
        job = get(config, request_id)
        if job.status.is_final or time.monotonic() >= deadline:
            return job
        time.sleep(_next_pause(pause, deadline))
        pause = min(pause * 1.5, MAX_POLL_SECONDS)


def complete(
    config: ClientConfig,
    model: str,
    body: dict[str, Any],
    time_limit: float,
    idempotency_key: str | None = None,
) -> CompletionSyncResponse:
    started = time.monotonic()
    if time_limit >= SYNC_ROUTE_MIN_TIMEOUT:
        status, answer = request(
            config,
            "POST",
            SYNC_PATH,
            query=query_for(model),
            body=body,
            time_limit=SYNC_ROUTE_HTTP_TIMEOUT,
            headers=key_header(idempotency_key),
        )
        if status == 200:
            return CompletionSyncResponse.model_validate(answer)
        request_id = _submitted_id(answer)  # 202: not done within the route's wait
    else:
        request_id = submit(config, model, body, idempotency_key)
    remaining = time_limit - (time.monotonic() - started)
    return result_of(wait(config, request_id, remaining), time_limit)


# ---- asynchronous -----------------------------------------------------------------------------


async def asubmit(
    session: aiohttp.ClientSession,
    config: ClientConfig,
    model: str,
    body: dict[str, Any],
    idempotency_key: str | None = None,
) -> str:
    _, answer = await arequest(
        session,
        config,
        "POST",
        ASYNC_PATH,
        query=query_for(model),
        body=body,
        time_limit=SUBMIT_HTTP_TIMEOUT,
        headers=key_header(idempotency_key),
    )
    return _submitted_id(answer)


async def aget(session: aiohttp.ClientSession, config: ClientConfig, request_id: str) -> JobView:
    _, answer = await arequest(session, config, "GET", job_path(request_id))
    return job_view(answer)


async def await_final(
    session: aiohttp.ClientSession, config: ClientConfig, request_id: str, time_limit: float
) -> JobView:
    deadline = time.monotonic() + time_limit
    pause = FIRST_POLL_SECONDS
    while True:
        job = await aget(session, config, request_id)
        if job.status.is_final or time.monotonic() >= deadline:
            return job
        await asyncio.sleep(_next_pause(pause, deadline))
        pause = min(pause * 1.5, MAX_POLL_SECONDS)


async def acomplete(
    session: aiohttp.ClientSession,
    config: ClientConfig,
    model: str,
    body: dict[str, Any],
    time_limit: float,
    idempotency_key: str | None = None,
) -> CompletionSyncResponse:
    started = time.monotonic()
    if time_limit >= SYNC_ROUTE_MIN_TIMEOUT:
        status, answer = await arequest(
            session,
            config,
            "POST",
            SYNC_PATH,
            query=query_for(model),
            body=body,
            time_limit=SYNC_ROUTE_HTTP_TIMEOUT,
            headers=key_header(idempotency_key),
        )
        if status == 200:
            return CompletionSyncResponse.model_validate(answer)
        request_id = _submitted_id(answer)
    else:
        request_id = await asubmit(session, config, model, body, idempotency_key)
    remaining = time_limit - (time.monotonic() - started)
    return result_of(await await_final(session, config, request_id, remaining), time_limit)
