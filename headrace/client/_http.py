"""HTTP for the client: urllib when called synchronously (no event loop, so it works in
notebooks), aiohttp when awaited. Both retry, bounded, only what is safe to retry."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from headrace.client._config import ClientConfig
from headrace.client.errors import (
    HeadraceClientError,
    HeadraceConnectionError,
    RateLimitExceededError,
    ServerError,
    error_from_response,
)

if TYPE_CHECKING:
    import aiohttp

ATTEMPTS = 4
MAX_RETRY_AFTER_SECONDS = 5.0
_backoff = wait_exponential(multiplier=0.1, max=2.0)


def should_retry(error: BaseException, *, idempotent: bool) -> bool:
    """Retry 429 and 503 and unreachable servers. A POST is resent only when it cannot have
    created a job: refused connections, and 503s Headrace itself answered (the job was then
    marked FAILED, never queued). A POST with an Idempotency-Key is resent as a GET is."""
    if isinstance(error, RateLimitExceededError):
        return True
    if isinstance(error, ServerError) and error.status_code == 503:
        return idempotent or error.from_api
    if isinstance(error, HeadraceConnectionError):
        return idempotent or error.refused
    return False


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, HeadraceClientError) and error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_AFTER_SECONDS)
    return float(_backoff(state))


def _retrying_kwargs(idempotent: bool, attempts: int) -> dict[str, Any]:
    return {
        "stop": stop_after_attempt(attempts),
        "wait": _wait,
        "retry": retry_if_exception(lambda e: should_retry(e, idempotent=idempotent)),
        "reraise": True,
    }


def unreachable(base_url: str, reason: object, *, refused: bool) -> HeadraceConnectionError:
    if refused:
        return HeadraceConnectionError(
            f"cannot reach the Headrace API at {base_url} (connection refused): is the stack"
            " running? Start it with `make dev` (or `headrace dev`), or set HEADRACE_BASE_URL",
            refused=True,
        )
    return HeadraceConnectionError(f"cannot reach the Headrace API at {base_url}: {reason}")


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except ValueError as e:
        raise ServerError(
            f"the API answered with a body that is not JSON: {payload[:200]!r}"
        ) from e


# ---- synchronous (urllib) ---------------------------------------------------------------------


def request(
    config: ClientConfig,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    time_limit: float = 60.0,
    attempts: int = ATTEMPTS,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of a 2xx answer; any other answer raises its client error."""
    retrying = Retrying(**_retrying_kwargs(_is_idempotent(method, headers), attempts))
    result: tuple[int, Any] = retrying(
        _request_once, config, method, path, query, body, time_limit, headers
    )
    return result


def _is_idempotent(method: str, headers: dict[str, str] | None) -> bool:
    # A POST with an Idempotency-Key cannot create a second job when resent.
    return method == "GET" or any(name.lower() == "idempotency-key" for name in headers or {})


def _encoded(
    config: ClientConfig, body: Any, extra: dict[str, str] | None = None
) -> tuple[dict[str, str], bytes | None]:
    """Headers (the key, a content type when there is a body) and the JSON body, if any."""
    headers = {**config.headers(), **(extra or {})}
    if body is None:
        return headers, None
    headers["content-type"] = "application/json"
    return headers, json.dumps(body).encode()


def _request_once(
    config: ClientConfig,
    method: str,
    path: str,
    query: dict[str, str] | None,
    body: Any,
    time_limit: float,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers, data = _encoded(config, body, extra_headers)
    req = urllib.request.Request(config.url(path, query), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=time_limit) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as e:
        with e:
            payload = e.read()
        raise error_from_response(
            e.code, payload, retry_after=e.headers.get("retry-after")
        ) from None
    except urllib.error.URLError as e:
        refused = isinstance(e.reason, ConnectionRefusedError)
        raise unreachable(config.base_url, e.reason, refused=refused) from e
    except (OSError, http.client.HTTPException) as e:
        # Timeouts and connections broken while the answer was on its way.
        what = "timed out" if isinstance(e, socket.timeout | TimeoutError) else repr(e)
        raise unreachable(config.base_url, what, refused=False) from e


# ---- asynchronous (aiohttp) -------------------------------------------------------------------


async def arequest(
    session: aiohttp.ClientSession,
    config: ClientConfig,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    time_limit: float = 60.0,
    attempts: int = ATTEMPTS,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """The async twin of `request`, on a session the caller owns."""
    async for attempt in AsyncRetrying(
        **_retrying_kwargs(_is_idempotent(method, headers), attempts)
    ):
        with attempt:
            return await _arequest_once(
                session, config, method, path, query, body, time_limit, headers
            )
    raise AssertionError("unreachable")  # pragma: no cover (reraise=True)


async def _arequest_once(
    session: aiohttp.ClientSession,
    config: ClientConfig,
    method: str,
    path: str,
    query: dict[str, str] | None,
    body: Any,
    time_limit: float,
    extra_headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    import aiohttp

    headers, data = _encoded(config, body, extra_headers)
    try:
        async with session.request(
            method,
            config.url(path, query),
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=time_limit),
        ) as response:
            payload = await response.read()
            if response.status >= 400:
                raise error_from_response(
                    response.status, payload, retry_after=response.headers.get("retry-after")
                )
            return response.status, _decode(payload)
    except aiohttp.ClientConnectorError as e:
        refused = isinstance(e.os_error, ConnectionRefusedError)
        raise unreachable(config.base_url, e.os_error, refused=refused) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        what = "timed out" if isinstance(e, TimeoutError) else repr(e)
        raise unreachable(config.base_url, what, refused=False) from e


def new_session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
