"""The fan-out behind `POST /v1/batches`: a batch's lines become jobs on the batch lane, recorded
and enqueued as every other job (the submit service's checks, record and message), in chunks.

One fan-out works on a batch at a time (a lease on its record). Each chunk is recorded, then
enqueued, then the cursor (`fanned`) advances, conditionally: a fan-out that died mid-chunk is
resumed by its message's redelivery at the cursor, that chunk written again only where its jobs
are absent (job ids come from the batch id and the line, so nothing is made twice), its
messages sent again (a worker takes a job's duplicate message as SQS's own). A delivery that
finds the batch held by a live fan-out is dropped: the holder sees a cancel before it lets go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from headrace.api import batch_files, batch_lines, batch_progress, completions, job_control
from headrace.api.batch_lines import LineJob
from headrace.api.batches import FanoutMessage
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import CompletionRequest, JobMessage
from headrace.core.errors import ConditionFailed, Conflict, NotFound, TransientError
from headrace.core.tables import batches as batch_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables.batches import BatchRecord, BatchStatus

logger = logging.getLogger("headrace.batches")

_WRITE_BATCH = 25  # BatchWriteItem's most items
_SEND_BATCH = 10  # SendMessageBatch's most entries
_BUSY = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)


def handle(services: ApiServices, message: FanoutMessage) -> None:
    """Make (or cancel) the jobs of a batch. Transient failures raise: the message comes back
    and the work resumes at the cursor."""
    table = services.settings.table_name
    try:
        found = batch_progress.read_batch(services, message.owner, message.batch_id)
    except NotFound:
        logger.warning("no batch %s to fan out", message.batch_id)
        return
    if found.status not in _BUSY:
        return
    now = services.clock()
    lease = services.settings.batch_fanout_lease_seconds
    try:
        answer = call_aws(
            services.dynamodb.update_item,
            **batch_table.claim_fanout(table, found, now=now, lease=lease),
        )
    except ConditionFailed:
        logger.info("batch %s is held by another fan-out", found.batch_id)
        return
    record = BatchRecord.from_item(answer["Attributes"])
    if record.status is BatchStatus.VALIDATING:
        update = batch_table.transition(
            table, record, to=BatchStatus.IN_PROGRESS, when=(BatchStatus.VALIDATING,), now=now
        )
        with contextlib.suppress(ConditionFailed):  # cancelled meanwhile
            call_aws(services.dynamodb.update_item, **update)
        record = batch_progress.read_batch(services, record.owner, record.batch_id)
    if record.status is BatchStatus.IN_PROGRESS and not record.fanout_done:
        record = _fan_out(services, record, redo=record.fanout_claims > 1)
    cancelled = record.status is BatchStatus.CANCELLING
    if cancelled:
        _cancel_jobs(services, record)
    release = batch_table.release(table, record, done=cancelled or record.fanout_done)
    record = BatchRecord.from_item(call_aws(services.dynamodb.update_item, **release)["Attributes"])
    if record.status is BatchStatus.CANCELLING and not cancelled:
        # Cancelled after the last look and before the release: its message found the lease.
        _cancel_jobs(services, record)
        release = batch_table.release(table, record, done=True)
        answer = call_aws(services.dynamodb.update_item, **release)
        record = BatchRecord.from_item(answer["Attributes"])
    batch_progress.maybe_finalize(services, record)


def _fan_out(services: ApiServices, record: BatchRecord, *, redo: bool) -> BatchRecord:
    content = batch_files.read(services, record.input_file_id)
    lines = batch_lines.parse_file(services, content, endpoint=record.endpoint)
    size = services.settings.batch_fanout_chunk_lines
    logger.info(
        "fanning out", extra={"batch_id": record.batch_id, "from": record.fanned, "of": len(lines)}
    )
    while record.fanned < len(lines) and record.status is BatchStatus.IN_PROGRESS:
        chunk = lines[record.fanned : record.fanned + size]
        messages = _record_jobs(services, record, chunk, conditional=redo)
        redo = False
        _enqueue(services, messages)
        answer = call_aws(
            services.dynamodb.update_item,
            **batch_table.advance(
                services.settings.table_name, record, to=record.fanned + len(chunk)
            ),
        )
        record = BatchRecord.from_item(answer["Attributes"])
    if record.fanned >= len(lines):
        record = dataclasses.replace(record, fanout_done=True)
    return record


def stored_request(services: ApiServices, record: BatchRecord, line: LineJob) -> CompletionRequest:
    """A line's job as the submit service stores it, on the batch lane, with the batch's id and
    the line's custom_id in its metadata (echoed in its view, events and webhooks)."""
    request = line.job.request
    completions.check_limits(services.settings, request)
    window_left = max(record.window_ends_at - services.clock(), 1.0)
    timeout = min(completions.timeout_of(services.settings, request), window_left)
    metadata = {
        **(request.metadata or {}),
        "batch_id": record.batch_id,
        "custom_id": line.custom_id,
    }
    return request.model_copy(
        update={
            "model": line.job.model,
            "timeout_seconds": timeout,
            "priority": "batch",
            "metadata": metadata,
        }
    )


def _record_jobs(
    services: ApiServices, record: BatchRecord, chunk: Sequence[LineJob], *, conditional: bool
) -> list[str]:
    """Write the chunk's job records; the job messages to send."""
    settings = services.settings
    now = services.clock()
    items: list[dict[str, Any]] = []
    messages: list[str] = []
    for line in chunk:
        request_id = batch_table.job_id(record.batch_id, line.index)
        stored = stored_request(services, record, line)
        put = job_table.put_new_job(
            settings.table_name,
            request_id=request_id,
            owner=record.owner,
            model=line.job.model,
            request=stored,
            now=now,
            ttl_seconds=settings.job_ttl_seconds,
        )
        put["Item"]["batch_id"] = {"S": record.batch_id}
        items.append(put)
        message = JobMessage(
            request_id=request_id,
            owner=record.owner,
            model=line.job.model,
            request=stored,
            submitted_at=now,
        )
        messages.append(message.model_dump_json())
    if conditional:  # a chunk a fan-out may have begun before: only the jobs it did not make
        for put in items:
            with contextlib.suppress(ConditionFailed):
                call_aws(services.dynamodb.put_item, **put)
        return messages
    for start in range(0, len(items), _WRITE_BATCH):
        requests = [
            {"PutRequest": {"Item": put["Item"]}} for put in items[start : start + _WRITE_BATCH]
        ]
        _write_all(services, {settings.table_name: requests})
    return messages


def _write_all(services: ApiServices, requests: dict[str, Any]) -> None:
    for _ in range(8):
        answer = call_aws(services.dynamodb.batch_write_item, RequestItems=requests)
        requests = answer.get("UnprocessedItems") or {}
        if not requests:
            return
        services.sleep(0.1)
    raise TransientError("the jobs table kept refusing a chunk of the batch's jobs")


def _enqueue(services: ApiServices, messages: Sequence[str]) -> None:
    url = services.queue_url("batch")
    for start in range(0, len(messages), _SEND_BATCH):
        entries = [
            {"Id": str(i), "MessageBody": body}
            for i, body in enumerate(messages[start : start + _SEND_BATCH])
        ]
        for _ in range(8):
            answer = call_aws(services.sqs.send_message_batch, QueueUrl=url, Entries=entries)
            failed = {entry["Id"] for entry in answer.get("Failed", [])}
            entries = [entry for entry in entries if entry["Id"] in failed]
            if not entries:
                break
            services.sleep(0.1)
        else:
            raise TransientError("the batch lane's queue kept refusing the batch's jobs")


def _cancel_jobs(services: ApiServices, record: BatchRecord) -> None:
    """Cancel every job the batch has (those already final stay as they are)."""
    for index in range(record.fanned):
        request_id = batch_table.job_id(record.batch_id, index)
        with contextlib.suppress(Conflict, NotFound):
            job_control.cancel(services, owner=record.owner, request_id=request_id)
    logger.info("batch jobs cancelled", extra={"batch_id": record.batch_id})
