"""What the API's service functions share: settings and AWS clients, built once per process."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.aws import boto3_client, fixed_user_agent
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import Priority
from headrace.core.logs import configure_logging
from headrace.core.settings import Settings


@dataclass
class ApiServices:
    """What the entry points need, built once per cold start and passed to every call."""

    settings: Settings
    dynamodb: Any
    sqs: Any
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    management_client_factory: Callable[[str], Any] | None = None
    _queue_urls: dict[str, str] = field(default_factory=dict)
    _known_keys: dict[str, float] = field(default_factory=dict)
    _management_clients: dict[str, Any] = field(default_factory=dict)

    def management_client(self, endpoint: str) -> Any:
        """An apigatewaymanagementapi client for a WebSocket API endpoint, created once."""
        client = self._management_clients.get(endpoint)
        if client is None:
            assert self.management_client_factory is not None
            client = self._management_clients[endpoint] = self.management_client_factory(endpoint)
        return client

    @functools.cached_property
    def events(self) -> Any:
        """The EventBridge client, made on first use: only the event handlers need one."""
        return boto3_client(self.settings, "events")

    @functools.cached_property
    def s3(self) -> Any:
        """The S3 client, made on first use: only chat reads a model's files (its template)."""
        return boto3_client(self.settings, "s3")

    def named_queue_url(self, name: str) -> str:
        """The URL of a queue by name, found once."""
        url = self._queue_urls.get(name)
        if url is None:
            found = call_aws(self.sqs.get_queue_url, QueueName=name)
            url = self._queue_urls[name] = str(found["QueueUrl"])
        return url

    def queue_url(self, priority: Priority = "interactive") -> str:
        """The URL of the queue of a lane, found once."""
        name = self.settings.batch_queue_name if priority == "batch" else self.settings.queue_name
        url = self._queue_urls.get(name)
        if url is None:
            found = call_aws(self.sqs.get_queue_url, QueueName=name)
            url = self._queue_urls[name] = str(found["QueueUrl"])
        return url


def build_services(settings: Settings) -> ApiServices:
    # A User-Agent composed once (headrace.core.aws.client_kwargs): every handler's calls pay
    # for botocore's composing it anew per request otherwise.
    user_agent = fixed_user_agent("api")
    return ApiServices(
        settings=settings,
        dynamodb=boto3_client(settings, "dynamodb", user_agent=user_agent),
        sqs=boto3_client(settings, "sqs", user_agent=user_agent),
        management_client_factory=lambda endpoint: boto3_client(
            settings, "apigatewaymanagementapi", endpoint_url=endpoint, user_agent=user_agent
        ),
    )


@functools.cache
def default_services() -> ApiServices:
    """Built once per cold start: settings from the environment, clients created once."""
    settings = Settings()
    configure_logging(settings.log_level)
    return build_services(settings)
