"""The one way to call AWS: sync for the API's Lambdas, async for the worker, one retry policy.

Every botocore error comes out as a domain error (headrace.core.errors); only the transient
kind is retried. Botocore's own standard retry mode (headrace.core.aws) already retries each
call a few times; this is the outer layer, for what outlasts it: a throttling burst, an
endpoint that restarts, a connection that will not open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from headrace.core.aws import translate_client_error
from headrace.core.errors import HeadraceError, Throttled, TransientError

T = TypeVar("T")

# What the worker's components are given to reach AWS: `await aws(operation, **kwargs)`.
AwsCall = Callable[..., Awaitable[Any]]

TRANSIENT_ERRORS: tuple[type[HeadraceError], ...] = (TransientError, Throttled)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    first_wait_s: float  # the first wait's bound; each wait's bound doubles, up to max_wait_s
    max_wait_s: float
    give_up_after_s: float  # no further attempt once this long has passed since the first

    def _arguments(self) -> dict[str, Any]:
        return {
            "retry": retry_if_exception_type(TRANSIENT_ERRORS),
            "stop": stop_after_attempt(self.attempts) | stop_after_delay(self.give_up_after_s),
            # Full jitter: workers throttled together do not come back together.
            "wait": wait_random_exponential(multiplier=self.first_wait_s, max=self.max_wait_s),
            "reraise": True,
        }

    def retrying(self) -> Retrying:
        return Retrying(**self._arguments())

    def async_retrying(self) -> AsyncRetrying:
        return AsyncRetrying(**self._arguments())


# One policy for a Lambda under API Gateway's 30 s limit and for the worker. Four attempts with
# at most 0.7 s of waiting between them: what fails fast (throttling, a 5xx) costs a request
# under a second. None begins 10 s after the first: what fails slowly (a connection that will
# not open, which botocore itself tries for seconds) stops while a Lambda still has time to
# answer its own 503 rather than the gateway's 504. The worker rides out a short outage the
# same way; past it, its loops take over (a receive backs off, the heartbeat beats again, the
# message of a result it could not store comes back).
AWS_RETRY = RetryPolicy(attempts=4, first_wait_s=0.1, max_wait_s=1.0, give_up_after_s=10.0)


def domain_error(error: ClientError | BotoCoreError) -> HeadraceError:
    if isinstance(error, ClientError):
        return translate_client_error(error)
    # No answer at all (connection refused or reset, timeouts): worth another attempt.
    return TransientError(str(error))


def call_aws(operation: Callable[..., T], /, **kwargs: Any) -> T:
    """`operation(**kwargs)` (a boto3 client method), retried under AWS_RETRY."""
    for attempt in AWS_RETRY.retrying():
        with attempt:
            try:
                return operation(**kwargs)
            except (ClientError, BotoCoreError) as e:
                raise domain_error(e) from e
    raise AssertionError("unreachable: the policy reraises the last error")


async def call_aws_async(operation: Callable[..., Awaitable[T]], /, **kwargs: Any) -> T:
    """`await operation(**kwargs)` (an aioboto3 client method), retried under AWS_RETRY."""
    async for attempt in AWS_RETRY.async_retrying():
        with attempt:
            try:
                return await operation(**kwargs)
            except (ClientError, BotoCoreError) as e:
                raise domain_error(e) from e
    raise AssertionError("unreachable: the policy reraises the last error")
