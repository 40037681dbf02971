"""The events an event source mapping invokes a function with: an SQS batch, a batch of
DynamoDB stream records; the partial batch response both take (`batchItemFailures`), and the
loop every SQS function runs over its messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from headrace.core.aws_calls import TRANSIENT_ERRORS
from headrace.core.logs import request_context

M = TypeVar("M", bound=BaseModel)

_camel = ConfigDict(alias_generator=AliasGenerator(validation_alias=to_camel), extra="ignore")


class SqsRecord(BaseModel):
    model_config = _camel
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str] = Field(default_factory=dict)
    event_source: str = "aws:sqs"
    event_source_arn: str = Field(default="", validation_alias="eventSourceARN")


class SqsEvent(BaseModel):
    records: list[SqsRecord] = Field(validation_alias="Records")


class DynamoDBStreamEvent(BaseModel):
    """The records stay as Lambda sends them (DynamoDB JSON images): headrace.api.job_events
    reads them."""

    records: list[dict[str, Any]] = Field(validation_alias="Records")


def batch_response(failed: list[str]) -> dict[str, Any]:
    """ReportBatchItemFailures: the records (message ids, or the stream's sequence number to
    resume from) to be retried; the others are done."""
    return {"batchItemFailures": [{"itemIdentifier": item} for item in failed]}


def each_message(
    raw_event: dict[str, Any],
    handle: Callable[[SqsRecord], bool],
    logger: logging.Logger,
    action: str,
) -> dict[str, Any]:
    """Run `handle` on every message of an SQS batch, under the message's id; it returns True
    when the message is done, False when it must come again. A message whose `handle` raises
    (its `action` failed) comes again too: SQS delivers it after the queue's visibility
    timeout, and the DLQ keeps it once its receives run out."""
    event = SqsEvent.model_validate(raw_event)
    failed: list[str] = []
    for record in event.records:
        with request_context(record.message_id):
            try:
                done = handle(record)
            except TRANSIENT_ERRORS as e:
                logger.warning("%s of message %s failed: %s", action, record.message_id, e.detail)
                done = False
            except Exception:
                logger.exception("%s of message %s failed", action, record.message_id)
                done = False
        if not done:
            failed.append(record.message_id)
    return batch_response(failed)


def body_of(record: SqsRecord, model: type[M], logger: logging.Logger) -> M | None:
    """The message's body as `model`, or None (logged) when it is not one: such a message is
    dropped, since no delivery of it would be valid."""
    try:
        return model.model_validate_json(record.body)
    except ValidationError as e:
        logger.error("message %s is not a %s, dropped: %s", record.message_id, model.__name__, e)
        return None
