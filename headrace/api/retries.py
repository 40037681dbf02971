"""Queueing a FAILED or TIMED_OUT job again, under the same request_id (POST .../retry).

One conditional write moves the job back to QUEUED with a new allowance of attempts, so of two
retries at once one wins and the other answers 409. The winner then forgets the job's stream
(its events, head and subscriptions: the next claim starts a new stream at seq 0, where it
would otherwise find the old one ended and end the job with it) and only then enqueues the
job: no worker can start it before its old stream is gone. Its attempts, attempt history and
epoch carry on, so the job view shows every attempt across retries.
"""

from __future__ import annotations

import logging
from typing import Any

from headrace.api import completions
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import JobMessage, JobStatus, SubmitResponse
from headrace.core.errors import ConditionFailed, Conflict, HeadraceError, TransientError
from headrace.core.tables import attempts as attempt_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.api")

RETRYABLE = (JobStatus.FAILED, JobStatus.TIMED_OUT)
BATCH_WRITE_LIMIT = 25
_WRITE_TRIES = 5


def retry(services: ApiServices, *, owner: str, request_id: str) -> SubmitResponse:
    """Queue a FAILED or TIMED_OUT job of `owner` again. NotFound for an unknown id or another
    key's job; Conflict, naming its status, for any other job."""
    record = completions.get_job(services, owner=owner, request_id=request_id)
    if record.status not in RETRYABLE:
        raise _not_retryable(record)
    settings = services.settings
    now = services.clock()
    update = attempt_table.requeue_job(
        settings.table_name,
        key=job_table.job_key(request_id),
        owner=owner,
        now=now,
        max_attempts=settings.max_attempts,
    )
    try:
        answer = call_aws(services.dynamodb.update_item, **update)
    except ConditionFailed:
        raise _not_retryable(
            completions.get_job(services, owner=owner, request_id=request_id)
        ) from None
    requeued = JobRecord.from_item(answer["Attributes"])
    logger.info("job queued again", extra={"retries": requeued.retries})
    message = JobMessage(
        request_id=request_id,
        owner=owner,
        model=requeued.model,
        request=requeued.request,
        submitted_at=now,
    )
    try:
        _forget_stream(services, request_id)
        call_aws(
            services.sqs.send_message,
            QueueUrl=services.queue_url(requeued.request.priority),
            MessageBody=message.model_dump_json(),
        )
    except HeadraceError as e:
        # Never QUEUED with no message: FAILED again, and this retry can be retried.
        completions.mark_enqueue_failed(services, request_id, str(e))
        raise TransientError("could not queue the job again; it is FAILED, retry") from e
    return SubmitResponse(request_id=request_id, status=JobStatus.QUEUED)


def _not_retryable(record: JobRecord) -> Conflict:
    return Conflict(
        f"request {record.request_id!r} is {record.status.value}: only a FAILED or TIMED_OUT"
        " job can be retried"
    )


def _forget_stream(services: ApiServices, request_id: str) -> None:
    """Delete every item of the job's partition but the job itself."""
    table = services.settings.table_name
    query: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": job_table.job_key(request_id)["pk"]},
        "ProjectionExpression": "pk, sk",
        "ConsistentRead": True,
    }
    keys: list[dict[str, Any]] = []
    while True:
        answer = call_aws(services.dynamodb.query, **query)
        keys += [i for i in answer.get("Items", []) if i != job_table.job_key(request_id)]
        if "LastEvaluatedKey" not in answer:
            break
        query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
    for start in range(0, len(keys), BATCH_WRITE_LIMIT):
        requests = [{"DeleteRequest": {"Key": k}} for k in keys[start : start + BATCH_WRITE_LIMIT]]
        for _ in range(_WRITE_TRIES):
            answer = call_aws(services.dynamodb.batch_write_item, RequestItems={table: requests})
            requests = answer.get("UnprocessedItems", {}).get(table, [])
            if not requests:
                break
        else:
            raise TransientError("could not delete the job's old stream; retry")
