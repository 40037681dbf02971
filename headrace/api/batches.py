"""Batches: create (one record and one message: the fan-out into jobs happens behind the API,
so a file of any allowed size is accepted at once), look up, list and cancel, scoped to the API
key as jobs are."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

from headrace.api import batch_files
from headrace.api.batch_protocol import (
    Batch,
    BatchCreateRequest,
    BatchErrors,
    BatchList,
    RequestCounts,
)
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import ConditionFailed, Conflict, HeadraceError, InvalidRequest, NotFound
from headrace.core.tables import batches as batch_table
from headrace.core.tables.batches import BatchRecord, BatchStatus

logger = logging.getLogger("headrace.batches")

WINDOW_SECONDS = 24 * 3600
MAX_METADATA_PAIRS = 16
MAX_LIST_LIMIT = 100


class FanoutMessage(BaseModel):
    """The fan-out queue's message: make (or cancel) the jobs of this batch."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1)
    batch_id: str = Field(min_length=1)


def create(services: ApiServices, *, owner: str, request: BatchCreateRequest) -> Batch:
    metadata = request.metadata or {}
    if len(metadata) > MAX_METADATA_PAIRS or any(
        len(key) > 64 or len(value) > 512 for key, value in metadata.items()
    ):
        raise InvalidRequest("metadata: up to 16 pairs, keys up to 64 and values up to 512 long")
    source = batch_files.get_record(services, owner=owner, file_id=request.input_file_id)
    if source.purpose != "batch":
        raise InvalidRequest(f"input_file_id: {request.input_file_id!r} is not a batch input file")
    if set(source.urls) != {request.endpoint}:
        raise InvalidRequest(
            f"endpoint: the input file's lines are for {', '.join(source.urls)}, not"
            f" {request.endpoint}"
        )
    now = services.clock()
    record = BatchRecord(
        batch_id=batch_table.new_id("batch_", now),
        owner=owner,
        endpoint=request.endpoint,
        input_file_id=source.file_id,
        completion_window=request.completion_window,
        status=BatchStatus.VALIDATING,
        total=source.lines,
        created_at=now,
        window_ends_at=now + WINDOW_SECONDS,
        expires_at=int(now) + services.settings.batch_retention_seconds,
        metadata=request.metadata,
    )
    table = services.settings.table_name
    call_aws(services.dynamodb.put_item, **batch_table.put_new(table, record.item()))
    try:
        notify(services, record)
    except HeadraceError:
        # No fan-out will come: the batch must not sit in validating.
        update = batch_table.transition(
            table, record, to=BatchStatus.FAILED, when=(BatchStatus.VALIDATING,), now=now
        )
        call_aws(services.dynamodb.update_item, **update)
        raise
    logger.info("batch created", extra={"batch_id": record.batch_id, "lines": record.total})
    return view(record)


def notify(services: ApiServices, record: BatchRecord) -> None:
    message = FanoutMessage(owner=record.owner, batch_id=record.batch_id)
    call_aws(
        services.sqs.send_message,
        QueueUrl=services.named_queue_url(services.settings.batch_fanout_queue_name),
        MessageBody=message.model_dump_json(),
    )


def get_record(services: ApiServices, *, owner: str, batch_id: str) -> BatchRecord:
    found = call_aws(
        services.dynamodb.get_item,
        **batch_table.get(services.settings.table_name, batch_table.batch_key(owner, batch_id)),
    )
    if "Item" not in found:
        raise NotFound(f"batch_id: no batch {batch_id!r}")
    return BatchRecord.from_item(found["Item"])


def get(services: ApiServices, *, owner: str, batch_id: str) -> Batch:
    return view(get_record(services, owner=owner, batch_id=batch_id))


def listing(services: ApiServices, *, owner: str, limit: int, after: str | None) -> BatchList:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit: from 1 to {MAX_LIST_LIMIT}")
    found = call_aws(
        services.dynamodb.query,
        **batch_table.query_batches(services.settings.table_name, owner, limit=limit, after=after),
    )
    batches = [view(BatchRecord.from_item(item)) for item in found.get("Items", [])]
    return BatchList(
        data=batches,
        first_id=batches[0].id if batches else None,
        last_id=batches[-1].id if batches else None,
        has_more="LastEvaluatedKey" in found and bool(batches),
    )


def cancel(services: ApiServices, *, owner: str, batch_id: str) -> Batch:
    """cancelling now; its jobs are cancelled behind the API, then it is cancelled with the
    output of the jobs that finished."""
    record = get_record(services, owner=owner, batch_id=batch_id)
    if record.status is BatchStatus.CANCELLING:
        return view(record)
    update = batch_table.transition(
        services.settings.table_name,
        record,
        to=BatchStatus.CANCELLING,
        when=(BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS),
        now=services.clock(),
    )
    try:
        answer = call_aws(services.dynamodb.update_item, **update)
    except ConditionFailed:
        now_is = get_record(services, owner=owner, batch_id=batch_id).status
        if now_is is BatchStatus.CANCELLING:
            return get(services, owner=owner, batch_id=batch_id)
        raise Conflict(
            f"batch_id: the batch is {now_is.value}: it can no longer be cancelled"
        ) from None
    cancelling = BatchRecord.from_item(answer["Attributes"])
    notify(services, cancelling)
    return view(cancelling)


def view(record: BatchRecord) -> Batch:
    def at(name: str) -> int | None:
        value = record.times.get(name)
        return int(value) if value is not None else None

    errors = BatchErrors() if record.status is BatchStatus.FAILED else None
    return Batch(
        id=record.batch_id,
        endpoint=record.endpoint,
        errors=errors,
        input_file_id=record.input_file_id,
        completion_window=record.completion_window,
        status=record.status.value,
        output_file_id=record.output_file_id,
        error_file_id=record.error_file_id,
        created_at=int(record.created_at),
        in_progress_at=at("in_progress"),
        expires_at=int(record.window_ends_at),
        finalizing_at=at("finalizing"),
        completed_at=at("completed"),
        failed_at=at("failed"),
        cancelling_at=at("cancelling"),
        cancelled_at=at("cancelled"),
        request_counts=RequestCounts(
            total=record.total, completed=record.completed, failed=record.failed
        ),
        metadata=record.metadata,
    )
