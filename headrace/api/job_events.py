"""A job's events, derived from the jobs table's stream: Completion Started when a job is claimed,
Completion Succeeded / Failed / Cancelled / Timed Out when it turns final, and the webhook of
each event its callback_url asked for.

The stream is the single source: an event goes out because a state was stored, whoever stored
it and whatever became of that process after. The stream keeps its records until the consumer
(the JobEvents function's event source mapping) has taken them, in order; a record whose events
could not all be put is reported, and it and the records after it come again. So a final event
is never lost, and may be sent twice: each carries a stable `event_id`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from headrace.api import webhooks
from headrace.api.event_bus import Outgoing, put_events
from headrace.api.services import ApiServices
from headrace.core.aws_calls import TRANSIENT_ERRORS, call_aws
from headrace.core.contracts import JobStatus
from headrace.core.errors import ConditionFailed
from headrace.core.events import (
    CALLBACK_NAMES,
    FINAL_DETAIL_TYPES,
    STARTED,
    CompletionEventDetail,
    Timings,
    detail_bytes,
    event_id,
    fitted,
    iso,
)
from headrace.core.key_ids import public_key_id
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams
from headrace.core.tables.jobs import Item, JobRecord

logger = logging.getLogger("headrace.events")

_JOB_SK = "job"
_STREAM_HEAD_SK = "stream"  # a job's stream head: written first at its first token


@dataclass(frozen=True)
class Change:
    """One record of the table's stream (NEW_AND_OLD_IMAGES)."""

    sequence_number: str
    event_name: str  # INSERT, MODIFY, REMOVE
    keys: Item
    new_image: Item | None
    old_image: Item | None
    created_at: float  # ApproximateCreationDateTime

    @property
    def request_id(self) -> str:
        return str(self.keys["pk"]["S"]).removeprefix("job#")


def transition(change: Change) -> str | None:
    """The detail type of the event a change of a job record makes, if any."""
    if change.keys.get("sk", {}).get("S") != _JOB_SK or change.new_image is None:
        return None
    new = JobStatus(change.new_image["status"]["S"])
    old = JobStatus(change.old_image["status"]["S"]) if change.old_image else None
    if new is old:
        return None
    if new is JobStatus.RUNNING and old in (None, JobStatus.QUEUED):
        return STARTED
    return FINAL_DETAIL_TYPES.get(new)


def detail_of(
    record: JobRecord, detail_type: str, first_token_at: float | None
) -> CompletionEventDetail:
    final = record.status.is_final
    has_output = record.status is JobStatus.SUCCEEDED or record.status.is_halted
    output = record.output if has_output else None
    detail = CompletionEventDetail(
        event_id=event_id(record.request_id, record.retries, detail_type),
        request_id=record.request_id,
        status=record.status,
        model=record.model,
        owner=public_key_id(record.owner),
        metadata=record.request.metadata,
        attempts=record.attempts,
        num_prompt_tokens=(output or {}).get("num_prompt_tokens"),
        num_completion_tokens=(output or {}).get("num_completion_tokens"),
        timings=Timings(
            queued_at=iso(record.requeued_at or record.created_at) or "",
            started_at=iso(record.started_at),
            first_token_at=iso(first_token_at),
            finished_at=iso(record.finished_at) if final else None,
        ),
        output=output,
        error=record.error if record.status is JobStatus.FAILED else None,
    )
    return fitted(detail)


def publish(services: ApiServices, changes: list[Change]) -> str | None:
    """Put the events of `changes` (in order) and schedule their webhooks. Returns the sequence
    number of the first change whose work did not all succeed (retry from there), else None."""
    first_tokens: dict[str, float] = {}
    outgoing: list[Outgoing] = []
    hooks: list[tuple[int, JobRecord, str, CompletionEventDetail]] = []
    stop = len(changes)
    for index, change in enumerate(changes):
        try:
            if first_token_to_note(change):
                first_tokens[change.request_id] = change.created_at
                _note_first_token(services, change.request_id, change.created_at)
                continue
            detail_type = transition(change)
            if detail_type is None:
                continue
            assert change.new_image is not None
            record = JobRecord.from_item(change.new_image)
            first = _first_token(services, change, record, first_tokens)
        except TRANSIENT_ERRORS as e:
            logger.warning("stream record %s: %s", change.sequence_number, e.detail)
            stop = index
            break
        except (KeyError, ValueError):
            # Not a job record this code can read: no event can come of it, however often it
            # is retried, and retrying would hold up every later event.
            logger.exception("stream record %s skipped", change.sequence_number)
            continue
        detail = detail_of(record, detail_type, first)
        outgoing.append(Outgoing(detail_type, detail_bytes(detail), tag=index))
        if record.request.callback_wants(CALLBACK_NAMES[detail_type]):
            hooks.append((index, record, detail_type, detail))
    failed = put_events(services, outgoing)
    if failed:
        stop = min(stop, *(entry.tag for entry in failed))
    for index, record, detail_type, detail in hooks:
        if index >= stop:
            break
        try:
            webhooks.schedule(
                services,
                request_id=record.request_id,
                owner=record.owner,
                url=record.request.callback_url or "",
                detail_type=detail_type,
                detail=detail,
            )
        except TRANSIENT_ERRORS as e:
            logger.warning("could not schedule the webhook of %s: %s", detail.event_id, e.detail)
            stop = index
            break
    sent = sum(1 for entry in outgoing if entry.tag < stop)
    if sent:
        logger.info("put %d job events on the bus", sent)
    return changes[stop].sequence_number if stop < len(changes) else None


def first_token_to_note(change: Change) -> bool:
    """A stream head created: the job's first token, unless the head came with the job's final
    state (streams.WITH_RESULT), which carries the decoder's first-token time already."""
    return (
        change.event_name == "INSERT"
        and change.keys.get("sk", {}).get("S") == _STREAM_HEAD_SK
        and streams.WITH_RESULT not in (change.new_image or {})
    )


def _note_first_token(services: ApiServices, request_id: str, at: float) -> None:
    """Keep the time of the job's first token on its record (the stream head is written at the
    first token; the record has no such field of its own)."""
    request = {
        "TableName": services.settings.table_name,
        "Key": job_table.job_key(request_id),
        "UpdateExpression": "SET first_token_at = if_not_exists(first_token_at, :at)",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeValues": {":at": {"N": repr(at)}},
    }
    with contextlib.suppress(ConditionFailed):  # the job is gone
        call_aws(services.dynamodb.update_item, **request)


def _first_token(
    services: ApiServices, change: Change, record: JobRecord, seen: dict[str, float]
) -> float | None:
    assert change.new_image is not None
    stored = change.new_image.get("first_token_at")
    if stored:
        return float(stored["N"])
    if record.request_id in seen:
        return seen[record.request_id]
    if not record.status.is_final or record.attempts == 0:
        return None
    # The first token was noted after the final write this change shows: read it.
    found = call_aws(
        services.dynamodb.get_item,
        **job_table.get_job(services.settings.table_name, record.request_id),
    )
    noted = found.get("Item", {}).get("first_token_at")
    return float(noted["N"]) if noted else None


def change_of(record: dict[str, Any]) -> Change:
    """A Change from one record of a DynamoDB stream event (Lambda's event shape)."""
    body = record["dynamodb"]
    return Change(
        sequence_number=str(body["SequenceNumber"]),
        event_name=str(record["eventName"]),
        keys=body["Keys"],
        new_image=body.get("NewImage"),
        old_image=body.get("OldImage"),
        created_at=float(body.get("ApproximateCreationDateTime", 0)),
    )
