"""Provisioned stacks on the shared moto server, served to the Lambda handlers as a cold start
would build their services: shared by the handler tests that go over the wire."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from headrace.api.services import ApiServices, build_services
from headrace.core.settings import Settings
from headrace.dev.moto import MOTO_CREDENTIALS
from infra.provision import AwsClients, ProvisionedResources, provision
from tests.handler_support import MODEL_ZOO, use_services


@contextlib.contextmanager
def own_clients(moto_endpoint: str) -> Iterator[AwsClients]:
    """The tests' own clients, apart from the handlers': to set up and to look afterwards."""
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    clients = AwsClients.create(moto_endpoint, session=session)
    try:
        yield clients
    finally:
        clients.close()


def new_stack(aws: AwsClients) -> ProvisionedResources:
    # The moto server is shared by the session: a stack name of its own.
    return provision(aws, stack_name=f"h{uuid.uuid4().hex[:10]}")


@contextlib.contextmanager
def handlers_served_by(
    moto_endpoint: str, resources: ProvisionedResources, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ApiServices]:
    """What a cold start builds (real boto3 clients) for `resources`, given to every handler.

    Built anew for each test, so that none rides on a key another test's services cached."""
    settings = Settings(
        aws_endpoint_url=moto_endpoint,
        region=resources.region,
        table_name=resources.table_name,
        queue_name=resources.queue_name,
        dlq_name=resources.dlq_name,
        models_bucket=resources.bucket_name,
        model_zoo=MODEL_ZOO,
    )
    services = build_services(settings)
    use_services(monkeypatch, services)
    try:
        yield services
    finally:
        services.dynamodb.close()
        services.sqs.close()


def stored_keys(aws: AwsClients, resources: ProvisionedResources) -> list[tuple[str, str]]:
    items: list[dict[str, Any]] = aws.dynamodb.scan(
        TableName=resources.table_name, ConsistentRead=True
    )["Items"]
    return sorted((item["pk"]["S"], item["sk"]["S"]) for item in items)
