"""The job events function: the jobs table's stream in, a job's events out on the bus and its
webhooks scheduled (headrace.api.job_events). Its event source mapping filters the stream to job
records and stream heads; a record not fully handled is reported, and the mapping retries from
it (ReportBatchItemFailures), in order."""

from __future__ import annotations

import logging
from typing import Any

from handlers.aws_events import DynamoDBStreamEvent, batch_response
from headrace.api import job_events
from headrace.api.services import default_services

logger = logging.getLogger("headrace.events")


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    event = DynamoDBStreamEvent.model_validate(raw_event)
    changes = [job_events.change_of(record) for record in event.records]
    retry_from = job_events.publish(default_services(), changes)
    return batch_response([retry_from] if retry_from else [])
