"""AWS clients, created once per process from the settings (endpoint URL only differs locally)."""

from __future__ import annotations

import functools
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from headrace.core.errors import (
    ConditionFailed,
    Gone,
    HeadraceError,
    NotFound,
    Throttled,
    TransientError,
)
from headrace.core.settings import Settings

_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
    }
)
_MISSING_CODES = frozenset(
    {"ResourceNotFoundException", "AWS.SimpleQueueService.NonExistentQueue", "NoSuchKey"}
)


def botocore_config(
    settings: Settings, *, validate_parameters: bool = True, user_agent: str | None = None
) -> Config:
    # Standard retry mode already backs off on throttling; keep attempts low so a Lambda
    # under API Gateway's 30 s limit still answers in time.
    return Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
        # Also the aioboto3 clients' limit on connections (aiobotocore reads it from here).
        max_pool_connections=settings.aws_max_pool_connections,
        parameter_validation=validate_parameters,
        user_agent=user_agent,
    )


def fixed_user_agent(caller: str) -> str:
    """The start of a User-Agent header composed once, for `client_kwargs(user_agent=...)`
    (botocore appends the session's extra, which names the SDK)."""
    return f"headrace-{caller}"


def client_kwargs(
    settings: Settings, *, validate_parameters: bool = True, user_agent: str | None = None
) -> dict[str, Any]:
    """boto3/aioboto3 client arguments, and two savings for a client on a hot path (the
    worker's, whose every call is event-loop CPU taken from feeding the decoder):

    - `validate_parameters=False` skips botocore's check of each request against the service
      model on the client side (AWS checks it again anyway): the worker's requests are built by
      its own code, and the walk over every attribute of a grouped transaction cost its event
      loop about a tenth of each call's CPU.
    - `user_agent` is sent as it is. Without it botocore composes the header anew for every
      request (SDK, OS, language, config and feature components, each sanitized), twice a
      call; that was about a tenth of an `UpdateItem`'s CPU in the calling process.
    """
    config = botocore_config(
        settings, validate_parameters=validate_parameters, user_agent=user_agent
    )
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": config}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return kwargs


_session_lock = threading.Lock()


@functools.cache
def _process_session() -> boto3.session.Session:
    return boto3.session.Session()


def boto3_client(
    settings: Settings,
    service: str,
    *,
    endpoint_url: str | None = None,
    user_agent: str | None = None,
) -> Any:
    """A client from the process's one boto3 session.

    A session loads the endpoint and service definitions once; a new session per client
    loads them again, which a Lambda pays at every cold start. Creating clients from one
    session is not thread-safe in botocore, hence the lock.
    """
    kwargs = client_kwargs(settings, user_agent=user_agent)
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    with _session_lock:
        return _process_session().client(service, **kwargs)  # type: ignore[call-overload]


def translate_client_error(error: ClientError) -> HeadraceError:
    """Map a botocore ClientError onto the domain hierarchy (callers `raise ... from error`)."""
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", code)
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(message)
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons") or []
        failed = tuple(
            i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"
        )
        if failed:
            return ConditionFailed(message, failed)
        # Another write to one of its items was in flight: AWS's advice is to try again.
        if any(r.get("Code") == "TransactionConflict" for r in reasons):
            return TransientError(f"{code}: {message}")
    if code in _THROTTLING_CODES:
        return Throttled(message)
    if code in _MISSING_CODES:
        return NotFound(message)
    if code == "GoneException":
        return Gone(message)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    if status >= 500:
        return TransientError(f"{code}: {message}")
    return HeadraceError(f"{code}: {message}")
