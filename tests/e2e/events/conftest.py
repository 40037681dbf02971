"""The event and webhook tests share one stack, stopped once they are done (package scope):
an idle stack left running until the session ends costs the tests after it CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.dev.stack import LocalStack
from tests.e2e import event_support


@pytest.fixture(scope="package")
def events_stack(
    model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A stack with webhook retries 0.3 s apart and intake redelivery after 2 s
    (tests/e2e/event_support.py)."""
    with event_support.events_stack(model_home, tmp_path_factory.mktemp("event-logs")) as s:
        yield s
