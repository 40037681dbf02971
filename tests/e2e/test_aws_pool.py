"""AWS clients keep as many connections as `aws_max_pool_connections` says, the gateway's
(boto3, handlers in threads) and the worker's (aioboto3, tasks) alike."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError

from headrace.api.services import build_services
from headrace.core.aws import boto3_client, client_kwargs, fixed_user_agent
from headrace.core.settings import Settings

THREADS = 16


def discarded_under_load(
    endpoint: str, pool: int, caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    settings = Settings(aws_endpoint_url=endpoint, aws_max_pool_connections=pool)
    client: Any = boto3_client(settings, "sqs")
    start = threading.Barrier(THREADS)

    def calling() -> None:
        start.wait()
        for _ in range(10):
            client.list_queues()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        threads = [threading.Thread(target=calling) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    client.close()
    return [r for r in caplog.records if "Connection pool is full" in r.getMessage()]


def test_a_pool_as_large_as_the_callers_discards_no_connection(
    moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert discarded_under_load(moto_endpoint, THREADS, caplog) == []
    # The setting is what decides: a pool smaller than the callers discards connections.
    assert discarded_under_load(moto_endpoint, 2, caplog) != []


def test_the_workers_aioboto3_clients_get_the_same_limit() -> None:
    settings = Settings(aws_endpoint_url="http://127.0.0.1:1", aws_max_pool_connections=48)

    async def limit() -> int:
        async with aioboto3.Session().client("sqs", **client_kwargs(settings)) as sqs:
            return int(sqs.meta.config.max_pool_connections)

    assert asyncio.run(limit()) == 48


def test_without_client_side_validation_a_bad_request_is_still_refused(
    moto_endpoint: str,
) -> None:
    """The worker skips botocore's parameter check for speed; the endpoint still refuses."""
    settings = Settings(aws_endpoint_url=moto_endpoint)

    async def refusal(validate: bool) -> BaseException:
        kwargs = client_kwargs(settings, validate_parameters=validate)
        async with aioboto3.Session().client("sqs", **kwargs) as sqs:
            try:
                await sqs.get_queue_url()  # QueueName is required
            except Exception as e:
                return e
        raise AssertionError("the request was not refused")

    assert type(asyncio.run(refusal(True))).__name__ == "ParamValidationError"
    assert isinstance(asyncio.run(refusal(False)), ClientError)


def test_a_fixed_user_agent_is_what_the_endpoint_gets(moto_endpoint: str) -> None:
    """The worker's clients send a User-Agent composed once, not botocore's per request."""
    settings = Settings(aws_endpoint_url=moto_endpoint)
    sent: list[str] = []

    async def call(user_agent: str | None) -> None:
        kwargs = client_kwargs(settings, user_agent=user_agent)
        async with aioboto3.Session().client("sqs", **kwargs) as sqs:
            sqs.meta.events.register(
                "before-send.sqs.ListQueues",
                lambda request, **_: sent.append(request.headers["User-Agent"].decode()),
            )
            await sqs.list_queues()

    asyncio.run(call(fixed_user_agent("worker")))
    asyncio.run(call(None))
    assert sent[0].startswith(fixed_user_agent("worker") + " ")
    assert not sent[1].startswith(fixed_user_agent("worker")), sent[1]


def test_the_api_handlers_clients_send_a_fixed_user_agent(moto_endpoint: str) -> None:
    """What every API handler's calls go through (its cold start's services) sends a User-Agent
    composed once, as the worker's clients do."""
    services = build_services(Settings(aws_endpoint_url=moto_endpoint))
    sent: list[str] = []
    for client in (services.dynamodb, services.sqs):
        client.meta.events.register(
            "before-send",
            lambda request, **_: sent.append(request.headers["User-Agent"].decode()),
        )
    services.dynamodb.list_tables()
    services.sqs.list_queues()
    services.dynamodb.close()
    services.sqs.close()
    assert len(sent) == 2
    assert all(agent.startswith(fixed_user_agent("api") + " ") for agent in sent), sent
