"""The intake function: the intake queue's messages (Completion Requested events through the
bus's rule, or plain requests sent to the queue) become jobs.

A transient failure (throttling, an AWS error) fails only its message, which SQS delivers again
after the queue's visibility timeout; a request refused as the HTTP API would refuse it puts a
Completion Rejected event on the bus and its message is done, never retried.
"""

from __future__ import annotations

import logging
from typing import Any

from handlers.aws_events import SqsEvent, batch_response
from headrace.api import intake
from headrace.api.event_bus import Outgoing, put_events
from headrace.api.services import default_services
from headrace.core.aws_calls import TRANSIENT_ERRORS
from headrace.core.events import REJECTED, detail_bytes
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.intake")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    event = SqsEvent.model_validate(raw_event)
    services = default_services()
    failed: list[str] = []
    for record in event.records:
        with request_context(record.message_id):
            try:
                outcome = intake.take(services, message_id=record.message_id, body=record.body)
                if isinstance(outcome, intake.Rejected):
                    rejected = Outgoing(REJECTED, detail_bytes(outcome.detail))
                    if put_events(services, [rejected]):
                        failed.append(record.message_id)  # the event must go out: retry
            except TRANSIENT_ERRORS as e:
                logger.warning("intake of message %s failed: %s", record.message_id, e.detail)
                failed.append(record.message_id)
            except Exception:
                # Not a refusal, not transient: a fault here. Retried, then the DLQ keeps it.
                logger.exception("intake of message %s failed", record.message_id)
                failed.append(record.message_id)
    return batch_response(failed)
