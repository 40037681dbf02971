"""The batch progress function: the jobs table's stream in; each batch job that turns final
counted once in its batch's `request_counts`, and a batch whose jobs are all final finalized
(headrace.api.batch_progress). A record not counted is reported, and retried from, in order."""

from __future__ import annotations

from typing import Any

from handlers.aws_events import DynamoDBStreamEvent, batch_response
from headrace.api import batch_progress, job_events
from headrace.api.services import default_services


def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    event = DynamoDBStreamEvent.model_validate(raw_event)
    changes = [job_events.change_of(record) for record in event.records]
    retry_from = batch_progress.count(default_services(), changes)
    return batch_response([retry_from] if retry_from else [])
