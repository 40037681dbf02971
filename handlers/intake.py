"""The intake function: the intake queue's messages (Completion Requested events through the
bus's rule, or plain requests sent to the queue) become jobs.

A transient failure (throttling, an AWS error) fails only its message, which SQS delivers again
after the queue's visibility timeout; a request refused as the HTTP API would refuse it puts a
Completion Rejected event on the bus and its message is done, never retried. Any other failure
is a fault here: retried, then the DLQ keeps it.
"""

from __future__ import annotations

import logging
from typing import Any

from handlers.aws_events import SqsRecord, each_message
from headrace.api import intake
from headrace.api.event_bus import Outgoing, put_events
from headrace.api.services import default_services
from headrace.core.events import REJECTED, detail_bytes

logger = logging.getLogger("headrace.intake")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    services = default_services()

    def take(record: SqsRecord) -> bool:
        outcome = intake.take(services, message_id=record.message_id, body=record.body)
        if isinstance(outcome, intake.Rejected):
            rejected = Outgoing(REJECTED, detail_bytes(outcome.detail))
            return not put_events(services, [rejected])  # the event must go out: else retry
        return True

    return each_message(raw_event, take, logger, "intake")
