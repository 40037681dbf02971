"""The worker's one way to call AWS: errors translated, only the transient kind retried."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from headrace.core.aws import translate_client_error
from headrace.core.errors import Throttled, TransientError

T = TypeVar("T")


async def call_aws(operation: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((TransientError, Throttled)),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    ):
        with attempt:
            try:
                return await operation(**kwargs)
            except ClientError as e:
                raise translate_client_error(e) from e
            except BotoCoreError as e:  # connection refused, timeouts: worth a retry
                raise TransientError(str(e)) from e
    raise AssertionError("unreachable")
