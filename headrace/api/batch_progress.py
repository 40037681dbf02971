"""A batch's progress, from its jobs: the jobs table's stream announces each job's final state
once; its batch's counter (`request_counts`) goes up by one in a transaction with a marker
written only if absent, so a stream record delivered again counts nothing. When every job the
batch made is final, it is finalized: the output and error files are written, then it turns
completed (or cancelled).

Finalizing is safe to run twice, or at once by two: in_progress -> finalizing is conditional,
the files' ids and content follow from the batch alone (writing them again writes the same),
and finalizing -> completed is conditional.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from headrace.api import batch_files, batch_lines
from headrace.api.batch_lines import kind_of
from headrace.api.job_events import Change
from headrace.api.openai_serving import OpenAIJob
from headrace.api.services import ApiServices
from headrace.core.aws_calls import TRANSIENT_ERRORS, call_aws
from headrace.core.contracts import JobStatus
from headrace.core.errors import ConditionFailed, NotFound
from headrace.core.tables import batches as batch_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables.batches import BatchRecord, BatchStatus, FileRecord
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.batches")

_GET_BATCH = 100  # BatchGetItem's most keys


def read_batch(services: ApiServices, owner: str, batch_id: str) -> BatchRecord:
    found = call_aws(
        services.dynamodb.get_item,
        **batch_table.get(services.settings.table_name, batch_table.batch_key(owner, batch_id)),
    )
    if "Item" not in found:
        raise NotFound(f"batch_id: no batch {batch_id!r}")
    return BatchRecord.from_item(found["Item"])


def _turned_final(change: Change) -> JobStatus | None:
    new = change.new_image
    if new is None or "batch_id" not in new or change.keys.get("sk", {}).get("S") != "job":
        return None
    status = JobStatus(new["status"]["S"])
    old = JobStatus(change.old_image["status"]["S"]) if change.old_image else None
    if not status.is_final or (old is not None and old.is_final):
        return None
    return status


@dataclass
class _Run:
    """Consecutive stream changes that turned jobs of one batch final: counted together."""

    owner: str
    batch_id: str
    first_sequence_number: str
    finals: dict[str, str] = field(default_factory=dict)  # request_id -> final status


def _runs(changes: list[Change]) -> list[_Run]:
    runs: list[_Run] = []
    for change in changes:
        status = _turned_final(change)
        if status is None:
            continue
        assert change.new_image is not None
        owner, batch_id = change.new_image["owner"]["S"], change.new_image["batch_id"]["S"]
        last = runs[-1] if runs else None
        if (
            last is None
            or (last.owner, last.batch_id) != (owner, batch_id)
            or len(last.finals) >= batch_table.COUNT_GROUP
        ):
            last = _Run(owner, batch_id, change.sequence_number)
            runs.append(last)
        last.finals[change.request_id] = status.value
    return runs


def count(services: ApiServices, changes: list[Change]) -> str | None:
    """Count the batch jobs that turned final, then finalize the batches that are done. Returns
    the sequence number of the first change not counted (retry from there), else None.

    A run of one batch's changes is counted in one transaction; if a job of it was counted
    before (a record delivered again), its jobs are counted one by one."""
    touched: dict[tuple[str, str], None] = {}
    for run in _runs(changes):
        groups = [list(run.finals.items())]
        try:
            _count_groups(services, run, groups)
        except ConditionFailed:
            try:
                _count_groups(services, run, [[final] for final in groups[0]])
            except TRANSIENT_ERRORS as e:
                logger.warning("stream record %s: %s", run.first_sequence_number, e.detail)
                return run.first_sequence_number
        except TRANSIENT_ERRORS as e:
            logger.warning("stream record %s: %s", run.first_sequence_number, e.detail)
            return run.first_sequence_number
        touched[(run.owner, run.batch_id)] = None
    for owner, batch_id in touched:
        with contextlib.suppress(NotFound):
            maybe_finalize(services, read_batch(services, owner, batch_id))
    return None


def _count_groups(services: ApiServices, run: _Run, groups: list[list[tuple[str, str]]]) -> None:
    """One transaction a group; a single job's ConditionFailed (counted before, or its batch
    gone) is skipped, a group's is raised."""
    expires_at = int(services.clock()) + services.settings.batch_retention_seconds
    for finals in groups:
        request = batch_table.count_final(
            services.settings.table_name,
            owner=run.owner,
            batch_id=run.batch_id,
            finals=finals,
            expires_at=expires_at,
        )
        try:
            call_aws(services.dynamodb.transact_write_items, **request)
        except ConditionFailed:
            if len(groups) == 1 and len(finals) > 1:
                raise


def maybe_finalize(services: ApiServices, record: BatchRecord) -> None:
    """Finalize the batch if every job it made is final (and no more are to come)."""
    if not record.all_final:
        return
    table = services.settings.table_name
    if record.status is BatchStatus.IN_PROGRESS:
        update = batch_table.transition(
            table,
            record,
            to=BatchStatus.FINALIZING,
            when=(BatchStatus.IN_PROGRESS,),
            now=services.clock(),
        )
        try:
            answer = call_aws(services.dynamodb.update_item, **update)
            record = BatchRecord.from_item(answer["Attributes"])
        except ConditionFailed:
            record = read_batch(services, record.owner, record.batch_id)
    if record.status not in (BatchStatus.FINALIZING, BatchStatus.CANCELLING):
        return
    output_id, error_id = write_files(services, record)
    to = BatchStatus.COMPLETED if record.status is BatchStatus.FINALIZING else BatchStatus.CANCELLED
    update = batch_table.finish(
        table, record, to=to, now=services.clock(), output_file_id=output_id, error_file_id=error_id
    )
    with contextlib.suppress(ConditionFailed):  # another finalizer got there first
        call_aws(services.dynamodb.update_item, **update)
        logger.info("batch %s", to.value, extra={"batch_id": record.batch_id})


def _jobs(services: ApiServices, record: BatchRecord) -> dict[str, JobRecord]:
    ids = [batch_table.job_id(record.batch_id, index) for index in range(record.total)]
    found: dict[str, JobRecord] = {}
    table = services.settings.table_name
    for start in range(0, len(ids), _GET_BATCH):
        keys = [job_table.job_key(request_id) for request_id in ids[start : start + _GET_BATCH]]
        wanted = {table: {"Keys": keys, "ConsistentRead": True}}
        while wanted:
            answer = call_aws(services.dynamodb.batch_get_item, RequestItems=wanted)
            for item in answer.get("Responses", {}).get(table, []):
                job = JobRecord.from_item(item)
                found[job.request_id] = job
            wanted = answer.get("UnprocessedKeys") or {}
    return found


def _custom_ids(services: ApiServices, record: BatchRecord) -> list[str]:
    """Every line's custom_id, from the input file (for the lines no job was made for)."""
    content = batch_files.read(services, record.input_file_id)
    return [json.loads(line)["custom_id"] for _, line in batch_lines.split_lines(content)]


def write_files(services: ApiServices, record: BatchRecord) -> tuple[str | None, str | None]:
    """The output and error files of a batch (None where it has no line)."""
    jobs = _jobs(services, record)
    custom_ids = _custom_ids(services, record) if len(jobs) < record.total else []
    kind = kind_of(record.endpoint)
    succeeded: list[str] = []
    failed: list[str] = []
    for index in range(record.total):
        request_id = batch_table.job_id(record.batch_id, index)
        job = jobs.get(request_id)
        if job is None:
            line = batch_lines.never_run(custom_ids[index], request_id)
            failed.append(line.model_dump_json())
            continue
        openai_job = OpenAIJob(kind=kind, model=job.model, request=job.request)
        custom_id = str((job.request.metadata or {}).get("custom_id", ""))
        ok, line = batch_lines.output_line(services, openai_job, custom_id, job)
        (succeeded if ok else failed).append(line.model_dump_json())
    output_id = _write(services, record, "output", succeeded)
    error_id = _write(services, record, "error", failed)
    return output_id, error_id


def _write(
    services: ApiServices, record: BatchRecord, role: str, lines: Iterable[str]
) -> str | None:
    text = "".join(line + "\n" for line in lines)
    if not text:
        return None
    file_id = batch_files.derived_id(record.batch_id, role)
    content = text.encode()
    now = services.clock()
    file = FileRecord(
        file_id=file_id,
        owner=record.owner,
        filename=f"{record.batch_id}_{role}.jsonl",
        purpose="batch_output",
        size=len(content),
        lines=content.count(b"\n"),
        created_at=now,
        expires_at=int(now) + services.settings.batch_retention_seconds,
    )
    batch_files.store(services, file, content)
    return file_id
