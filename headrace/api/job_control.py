"""Cancelling a job, over HTTP and WebSocket alike.

A job that has not started (QUEUED, never claimed) is CANCELLED at once by a write conditional
on just that, and its followers get its last event now: no worker will send one (the worker
that later receives its message finds the job final and deletes the message undecoded). Any
other job that is not final keeps its status and gets the cancel recorded on it (conditional on
it not being final): the worker that holds it learns of it within HEADRACE_CANCEL_CHECK_MS (one
BatchGetItem for all its running jobs) and stops it within one decode step, ending it CANCELLED
with its partial text; a job whose worker died, or that was handed back, is ended so by the next
claim, undecoded. Every final write is conditional on a state that any other final write
leaves behind, so a job is final once, whatever the race: a cancel that comes as decoding ends
leaves it SUCCEEDED or CANCELLED, never one then the other.
"""

from __future__ import annotations

import logging
from typing import Any

from headrace.api import completions, websocket
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import CompletionOutput, JobStatus
from headrace.core.control import CancelResponse
from headrace.core.errors import ConditionFailed, Conflict, HeadraceError, TransientError
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.core.tables.connections import Connection
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.api")

# Each failed conditional write means the job moved on (QUEUED -> RUNNING -> final): it can
# do so only twice.
_TRIES = 3
NOTHING_DECODED = CompletionOutput(text="", num_completion_tokens=0).to_wire()


def cancel(services: ApiServices, *, owner: str, request_id: str) -> CancelResponse:
    """Cancel a job of `owner`. NotFound for an unknown id or another key's job; Conflict,
    naming its status, for a final one."""
    record = completions.get_job(services, owner=owner, request_id=request_id)
    table = services.settings.table_name
    for _ in range(_TRIES):
        if record.status.is_final:
            raise Conflict(
                f"request {request_id!r} is already {record.status.value}: only a QUEUED or"
                " RUNNING job can be cancelled"
            )
        now = services.clock()
        if record.status is JobStatus.QUEUED and record.epoch == 0:
            update = job_table.cancel_queued_job(
                table, request_id=request_id, owner=owner, now=now, output=NOTHING_DECODED
            )
            cancelled = _write(services, update)
            if cancelled is not None:
                logger.info("job cancelled before any worker took it")
                _announce(services, cancelled)
                return CancelResponse(
                    request_id=request_id, status=JobStatus.CANCELLED, cancelling=False
                )
        else:
            update = job_table.request_cancel(table, request_id=request_id, owner=owner, now=now)
            asked = _write(services, update)
            if asked is not None:
                logger.info("cancel requested", extra={"status": asked.status.value})
                return CancelResponse(request_id=request_id, status=asked.status, cancelling=True)
        record = completions.get_job(services, owner=owner, request_id=request_id)
    raise TransientError(f"request {request_id!r} kept changing while it was cancelled; retry")


def _write(services: ApiServices, update: dict[str, Any]) -> JobRecord | None:
    """The job as the conditional update left it; None if its condition failed."""
    try:
        answer = call_aws(services.dynamodb.update_item, **update)
    except ConditionFailed:
        return None
    return JobRecord.from_item(answer["Attributes"])


def _announce(services: ApiServices, record: JobRecord) -> None:
    """Post a job cancelled before it started its one last event, to every connection that
    follows it (the one that sent `complete`, say). Who subscribes later finds the job final
    and gets the same event replayed; attaching is conditional, so nobody gets it twice."""
    table = services.settings.table_name
    event = websocket.event_without_stream(record)
    try:
        answer = call_aws(
            services.dynamodb.query,
            **stream_table.query_subscriptions(table, record.request_id),
        )
        for item in answer.get("Items", []):
            subscription = stream_table.Subscription.from_item(item)
            try:
                call_aws(
                    services.dynamodb.update_item,
                    **stream_table.attach_subscription(
                        table,
                        request_id=record.request_id,
                        connection_id=subscription.connection_id,
                        attacher=stream_table.HANDLER_ATTACHMENT,
                    ),
                )
            except ConditionFailed:
                continue  # a subscribe handler replays to it
            connection = Connection(subscription.connection_id, record.owner, subscription.endpoint)
            websocket.post_event(services, connection, event)
    except HeadraceError as e:
        # The job is CANCELLED all the same; a follower left waiting can subscribe again.
        logger.warning("could not tell the job's followers: %s", e.detail)
