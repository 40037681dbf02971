"""The webhook sender: each message of the webhook queue is one delivery attempt
(headrace.api.webhooks.deliver), recorded whatever its outcome; a retry is a new message."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from handlers.aws_events import SqsEvent, batch_response
from headrace.api import webhooks
from headrace.api.services import default_services
from headrace.core.logs import request_context
from headrace.core.webhook_contracts import DeliveryOrder

logger = logging.getLogger("headrace.webhooks")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    event = SqsEvent.model_validate(raw_event)
    services = default_services()
    failed: list[str] = []
    for record in event.records:
        try:
            order = DeliveryOrder.model_validate_json(record.body)
        except ValidationError:
            logger.error("message %s is not a delivery order: dropped", record.message_id)
            continue
        with request_context(order.request_id):
            try:
                attempt = webhooks.deliver(services, order)
            except Exception:
                # Its AWS calls failed (recording the attempt, or sending the next): the message
                # comes again, and the attempt with it.
                logger.exception("delivery of %s failed", order.event_id)
                failed.append(record.message_id)
                continue
            if attempt is not None:
                logger.info(
                    "webhook %s attempt %d: %s",
                    attempt.event_id,
                    attempt.attempt,
                    attempt.outcome,
                    extra={"status_code": attempt.status_code, "latency_ms": attempt.latency_ms},
                )
    return batch_response(failed)
