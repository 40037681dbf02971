"""The webhook sender: each message of the webhook queue is one delivery attempt
(headrace.api.webhooks.deliver), recorded whatever its outcome; a retry is a new message. A
message whose AWS calls fail (recording the attempt, or sending the next) comes again, and the
attempt with it."""

from __future__ import annotations

import logging
from typing import Any

from handlers.aws_events import SqsRecord, body_of, each_message
from headrace.api import webhooks
from headrace.api.services import default_services
from headrace.core.logs import request_context
from headrace.core.webhook_contracts import DeliveryOrder

logger = logging.getLogger("headrace.webhooks")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    services = default_services()

    def send(record: SqsRecord) -> bool:
        order = body_of(record, DeliveryOrder, logger)
        if order is None:
            return True
        with request_context(order.request_id):
            attempt = webhooks.deliver(services, order)
            if attempt is not None:
                logger.info(
                    "webhook %s attempt %d: %s",
                    attempt.event_id,
                    attempt.attempt,
                    attempt.outcome,
                    extra={"status_code": attempt.status_code, "latency_ms": attempt.latency_ms},
                )
        return True

    return each_message(raw_event, send, logger, "delivery")
