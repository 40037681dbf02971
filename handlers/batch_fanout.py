"""The batch fan-out function: a batch's message (from POST /v1/batches, or its cancel) makes
the batch's jobs, or cancels them (headrace.api.batch_fanout). A message that fails comes back
after the queue's visibility timeout, and the work resumes where it stopped."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from handlers.aws_events import SqsEvent, batch_response
from headrace.api import batch_fanout
from headrace.api.batches import FanoutMessage
from headrace.api.services import default_services
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.batches")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    event = SqsEvent.model_validate(raw_event)
    services = default_services()
    failed: list[str] = []
    for record in event.records:
        with request_context(record.message_id):
            try:
                message = FanoutMessage.model_validate_json(record.body)
            except ValidationError:
                logger.exception("message %s is not a batch's: dropped", record.message_id)
                continue
            try:
                batch_fanout.handle(services, message)
            except Exception:
                logger.exception("fan-out of batch %s failed", message.batch_id)
                failed.append(record.message_id)
    return batch_response(failed)
