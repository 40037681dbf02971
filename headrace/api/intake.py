"""The intake: a Completion Requested event (through the bus's rule) or a plain message sent to
the intake queue becomes a job, validated as the HTTP API validates a request.

A message delivered again (the same SQS message id, the same EventBridge event id, or the same
`request_id` chosen by the sender) makes one job: the job's request_id is derived from that id,
and its record is written only if absent. A redelivery that finds the job still QUEUED and never
claimed sends its message again (the first delivery may have died between the two writes); a
worker handles a job's duplicate message as it handles SQS's own.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from pydantic import ValidationError

from headrace.api import completions
from headrace.api.auth import require_known_key
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import JobMessage, JobStatus, describe_validation_error
from headrace.core.errors import (
    ConditionFailed,
    Conflict,
    HeadraceError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnprocessableBody,
)
from headrace.core.events import IntakeRequest, RejectedDetail, event_id
from headrace.core.key_ids import key_hash_of
from headrace.core.tables import jobs as job_table
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.intake")


class UnknownOwner(HeadraceError):
    status_code = 401


# What a refused request would have been answered over HTTP: not worth retrying.
REFUSALS: tuple[type[HeadraceError], ...] = (
    InvalidRequest,
    UnprocessableBody,
    PayloadTooLarge,
    Conflict,
    NotFound,
    UnknownOwner,
)


@dataclass(frozen=True)
class Accepted:
    request_id: str
    created: bool  # False: a redelivery of a job that exists


@dataclass(frozen=True)
class Rejected:
    detail: RejectedDetail


@dataclass(frozen=True)
class _Body:
    payload: str  # the request's JSON
    source_event_id: str | None  # the EventBridge event it came in, if it did


def take(services: ApiServices, *, message_id: str, body: str) -> Accepted | Rejected:
    """Make the job a message asks for, or say why not. Transient AWS failures raise (the
    message is then retried); a refused request is returned, never raised."""
    parsed = _unwrap(body)
    request: IntakeRequest | None = None
    try:
        request = _parse(parsed.payload)
        return _submit(services, request, message_id=message_id, source=parsed.source_event_id)
    except REFUSALS as e:
        detail = RejectedDetail(
            event_id=event_id("rejected", parsed.source_event_id or message_id),
            reason=e.detail,
            status_code=e.status_code,
            source_event_id=parsed.source_event_id,
            message_id=message_id,
            request_id=request.request_id if request else None,
            owner=request.owner if request else None,
            metadata=request.metadata if request else None,
        )
        logger.info("intake refused a request: %s", e.detail)
        return Rejected(detail)


def _unwrap(body: str) -> _Body:
    """An EventBridge envelope (what the rule's SQS target receives) or the request itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return _Body(body, None)
    if isinstance(data, dict) and {"detail-type", "detail", "id"} <= data.keys():
        return _Body(json.dumps(data["detail"]), str(data["id"]))
    return _Body(body, None)


def _parse(payload: str) -> IntakeRequest:
    try:
        return IntakeRequest.model_validate_json(payload, strict=True)
    except ValidationError as e:
        if e.errors(include_url=False)[0]["type"] == "json_invalid":
            raise UnprocessableBody("body: not valid JSON") from e
        raise InvalidRequest(describe_validation_error(e)) from e


def _submit(
    services: ApiServices, intake: IntakeRequest, *, message_id: str, source: str | None
) -> Accepted:
    owner = key_hash_of(intake.owner)
    try:
        require_known_key(services, owner)
    except HeadraceError as e:
        if e.status_code != 401:
            raise
        raise UnknownOwner(f"owner: unknown API key {intake.owner}") from None
    request = intake.completion_request()
    model = completions.resolve_model(services, request, None)
    completions.check_limits(services.settings, request)
    request_id = _request_id(intake, source or message_id)
    stored = request.model_copy(
        update={
            "model": model,
            "timeout_seconds": completions.timeout_of(services.settings, request),
        }
    )
    now = services.clock()
    message = JobMessage(
        request_id=request_id, owner=owner, model=model, request=stored, submitted_at=now
    )
    if len(message.model_dump_json().encode()) > completions.QUEUE_MESSAGE_LIMIT_BYTES:
        raise PayloadTooLarge("request: over the queue's limit of 256 KiB as a job")
    try:
        call_aws(
            services.dynamodb.put_item,
            **job_table.put_new_job(
                services.settings.table_name,
                request_id=request_id,
                owner=owner,
                model=model,
                request=stored,
                now=now,
                ttl_seconds=services.settings.job_ttl_seconds,
            ),
        )
    except ConditionFailed:
        return _existing(services, request_id, owner)
    _enqueue(services, message)
    return Accepted(request_id, created=True)


def _request_id(intake: IntakeRequest, delivery_id: str) -> str:
    if intake.request_id is None:
        return event_id("intake", delivery_id)
    try:
        return str(uuid.UUID(intake.request_id))
    except ValueError:
        raise InvalidRequest("request_id: must be a UUID") from None


def _existing(services: ApiServices, request_id: str, owner: str) -> Accepted:
    found = call_aws(
        services.dynamodb.get_item,
        **job_table.get_job(services.settings.table_name, request_id),
    )
    record = JobRecord.from_item(found["Item"])
    if record.owner != owner:
        raise Conflict(f"request_id: {request_id} is already another key's job")
    if record.status is JobStatus.QUEUED and record.epoch == 0 and record.retries == 0:
        message = JobMessage(
            request_id=request_id,
            owner=owner,
            model=record.model,
            request=record.request,
            submitted_at=record.created_at,
        )
        _enqueue(services, message)
    logger.info("intake: job %s exists (%s), one job kept", request_id, record.status.value)
    return Accepted(request_id, created=False)


def _enqueue(services: ApiServices, message: JobMessage) -> None:
    call_aws(
        services.sqs.send_message,
        QueueUrl=services.queue_url(message.request.priority),
        MessageBody=message.model_dump_json(),
    )
