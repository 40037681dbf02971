"""The e2e tests' fixtures: a moto server, and the whole local stack over the wire."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from headrace.dev.moto import MOTO_CREDENTIALS, MOTO_ENV, start_moto_server, stop_process
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.support import Api, make_stack


@pytest.fixture(scope="package")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real moto server (a child process) shared by the e2e tests (stopped after them).

    While it runs, the AWS_* environment holds dummy credentials and us-east-1, so boto3 clients
    made with `endpoint_url=moto_endpoint` need nothing else. Tests share the server: give each
    test its own resource names (e.g. a unique stack name). The server's log is in the pytest
    temp directory (moto/moto.log).
    """
    log_file = tmp_path_factory.mktemp("moto") / "moto.log"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_PROFILE", raising=False)
        for name, value in MOTO_ENV.items():
            env.setenv(name, value)
        process, url = start_moto_server(log_file=log_file)
        try:
            yield url
        finally:
            stop_process(process)


@pytest.fixture(scope="package")
def stack(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """moto + provisioned resources + gateway + one worker, shared by the e2e tests."""
    with make_stack(model_home, tmp_path_factory.mktemp("logs"), workers=1) as running:
        yield running


@pytest.fixture(scope="package")
def api(stack: LocalStack) -> Api:
    return Api(stack.base_url, stack.api_key)


@pytest.fixture(scope="package")
def aws(stack: LocalStack) -> Iterator[AwsClients]:
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    clients = AwsClients.create(stack.aws_endpoint_url, session=session)
    yield clients
    clients.close()
