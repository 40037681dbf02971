"""The loop every SQS function runs (handlers.aws_events.each_message): which messages it
reports for retry, and what it logs of each failure."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import BaseModel

from handlers.aws_events import SqsRecord, body_of, each_message
from headrace.core.errors import Throttled
from headrace.core.logs import request_id_var

logger = logging.getLogger("headrace.test_sqs_events")


def _event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": body}
            for i, body in enumerate(bodies)
        ]
    }


def test_only_failed_messages_are_reported_each_under_its_own_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str | None]] = []

    def handle(record: SqsRecord) -> bool:
        seen.append((record.body, request_id_var.get()))
        if record.body == "throttled":
            raise Throttled("slow down")
        if record.body == "broken":
            raise ValueError("a fault")
        return record.body != "retry"

    with caplog.at_level(logging.INFO, logger=logger.name):
        answer = each_message(_event("done", "throttled", "broken", "retry"), handle, logger, "x")
    assert answer == {"batchItemFailures": [{"itemIdentifier": m} for m in ("m1", "m2", "m3")]}
    assert seen == [("done", "m0"), ("throttled", "m1"), ("broken", "m2"), ("retry", "m3")]
    logged = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert logged == [
        ("WARNING", "x of message m1 failed: slow down", False),
        ("ERROR", "x of message m2 failed", True),
    ]


class _Order(BaseModel):
    order_id: str


def test_a_body_that_is_not_the_model_is_none_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad = (SqsRecord.model_validate(r) for r in _event('{"order_id": "a"}', "{}")["Records"])
    assert body_of(good, _Order, logger) == _Order(order_id="a")
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert body_of(bad, _Order, logger) is None
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["message m1 is not a _Order"]
