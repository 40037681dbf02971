"""The cancel and deadline tests share one stack (`stack`, `api` and `aws` here are its),
stopped once they are done (package scope): an idle stack left running until the session ends
costs the tests after it CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e import control_support
from tests.e2e.lease_support import aws_clients
from tests.e2e.support import Api


@pytest.fixture(scope="package")
def control_stack(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A stack whose worker learns of cancels every 50 ms and holds two jobs at most
    (tests/e2e/control_support.py)."""
    with control_support.control_stack(model_home, tmp_path_factory.mktemp("control-logs")) as s:
        yield s


@pytest.fixture(scope="package")
def stack(control_stack: LocalStack) -> LocalStack:
    return control_stack


@pytest.fixture(scope="package")
def api(stack: LocalStack) -> Api:
    return Api(stack.base_url, stack.api_key)


@pytest.fixture(scope="package")
def aws(stack: LocalStack) -> Iterator[AwsClients]:
    clients = aws_clients(stack)
    yield clients
    clients.close()
