"""The batch fan-out function: a batch's message (from POST /v1/batches, or its cancel) makes
the batch's jobs, or cancels them (headrace.api.batch_fanout). A message that fails comes back
after the queue's visibility timeout, and the work resumes where it stopped."""

from __future__ import annotations

import logging
from typing import Any

from handlers.aws_events import SqsRecord, body_of, each_message
from headrace.api import batch_fanout
from headrace.api.batches import FanoutMessage
from headrace.api.services import default_services

logger = logging.getLogger("headrace.batches")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    services = default_services()

    def fan_out(record: SqsRecord) -> bool:
        message = body_of(record, FanoutMessage, logger)
        if message is not None:
            batch_fanout.handle(services, message)
        return True

    return each_message(raw_event, fan_out, logger, "fan-out")
