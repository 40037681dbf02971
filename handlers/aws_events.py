"""The events an event source mapping invokes a function with: an SQS batch, a batch of
DynamoDB stream records; and the partial batch response both take (`batchItemFailures`)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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
