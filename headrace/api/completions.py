"""The completion service: validate, record and enqueue a job, look it up, wait for it."""

from __future__ import annotations

import contextlib
import uuid

from headrace.api import webhook_urls
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import CompletionRequest, JobMessage, SubmitResponse
from headrace.core.errors import (
    ConditionFailed,
    HeadraceError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TransientError,
)
from headrace.core.guides import check_guide
from headrace.core.settings import Settings
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables.connections import Connection
from headrace.core.tables.jobs import JobRecord

# SQS takes a message body of at most 256 KiB: a job that does not fit would be recorded and then
# fail to enqueue (a 503). The prompt is bounded on its own (max_prompt_bytes), the rest of a
# request (its stop sequences) only by this.
QUEUE_MESSAGE_LIMIT_BYTES = 256 * 1024


def resolve_model(
    services: ApiServices, request: CompletionRequest, query_model: str | None
) -> str:
    if query_model and request.model and query_model != request.model:
        raise InvalidRequest(
            f"model: body names {request.model!r} but model_endpoint_name is {query_model!r}"
        )
    model = query_model or request.model
    if not model:
        raise InvalidRequest("model: field required (in the body or as ?model_endpoint_name=)")
    if model not in services.settings.model_zoo:
        raise NotFound(f"model {model!r} not found; GET /v1/llm/model-endpoints lists the models")
    return model


def check_limits(settings: Settings, request: CompletionRequest) -> None:
    unsupported = request.unsupported_field()
    if unsupported:
        name, reason = unsupported
        raise InvalidRequest(f"{name}: not supported ({reason})")
    check_guide(request)
    prompt_bytes = len(request.prompt.encode())
    if prompt_bytes > settings.max_prompt_bytes:
        raise PayloadTooLarge(
            f"prompt: {prompt_bytes} bytes exceeds the limit of {settings.max_prompt_bytes}"
        )
    if request.max_new_tokens > settings.max_new_tokens_limit:
        raise InvalidRequest(
            f"max_new_tokens: {request.max_new_tokens} exceeds the limit of"
            f" {settings.max_new_tokens_limit}"
        )
    stops = request.stop_sequences or []
    if len(stops) > settings.max_stop_sequences:
        raise InvalidRequest(
            f"stop_sequences: at most {settings.max_stop_sequences} stop sequences"
        )
    if request.timeout_seconds and request.timeout_seconds > settings.max_timeout_seconds:
        raise InvalidRequest(
            f"timeout_seconds: {request.timeout_seconds:g} exceeds the limit of"
            f" {settings.max_timeout_seconds:g}"
        )
    webhook_urls.check_request(settings, request)


def timeout_of(settings: Settings, request: CompletionRequest) -> float:
    """The job's timeout_seconds: the request's, else the server's default (within the max)."""
    default = min(settings.default_timeout_seconds, settings.max_timeout_seconds)
    return request.timeout_seconds or default


def submit(
    services: ApiServices,
    *,
    owner: str,
    request: CompletionRequest,
    model: str,
    followed_by: Connection | None = None,
) -> SubmitResponse:
    """Record the job, then enqueue it. A job whose message never left is marked FAILED.

    A job `followed_by` a WebSocket connection is recorded with that connection's
    subscription, in one transaction, so it has its follower before any worker can start it.
    """
    check_limits(services.settings, request)
    settings = services.settings
    request_id = str(uuid.uuid4())
    now = services.clock()
    timeout = timeout_of(settings, request)  # the deadline goes with the job: record, message
    stored_request = request.model_copy(update={"model": model, "timeout_seconds": timeout})
    message = JobMessage(
        request_id=request_id, owner=owner, model=model, request=stored_request, submitted_at=now
    ).model_dump_json()
    message_bytes = len(message.encode())
    if message_bytes > QUEUE_MESSAGE_LIMIT_BYTES:
        raise PayloadTooLarge(
            f"request: {message_bytes} bytes as a job, over the queue's limit of"
            f" {QUEUE_MESSAGE_LIMIT_BYTES} (shorten the prompt or stop_sequences)"
        )
    new_job = job_table.put_new_job(
        settings.table_name,
        request_id=request_id,
        owner=owner,
        model=model,
        request=stored_request,
        now=now,
        ttl_seconds=settings.job_ttl_seconds,
    )
    if followed_by is None:
        call_aws(services.dynamodb.put_item, **new_job)
    else:
        followed = connection_table.new_job_followed(
            new_job,
            request_id=request_id,
            connection_id=followed_by.connection_id,
            endpoint=followed_by.endpoint,
            now=now,
        )
        call_aws(services.dynamodb.transact_write_items, **followed)
    try:
        call_aws(
            services.sqs.send_message,
            QueueUrl=services.queue_url(request.priority),
            MessageBody=message,
        )
    except HeadraceError as e:
        # Whatever went wrong (call_aws turns every botocore error into a HeadraceError), the
        # recorded job must not sit in QUEUED with no message.
        mark_enqueue_failed(services, request_id, str(e))
        raise TransientError("could not enqueue the job; it was marked FAILED, retry") from e
    return SubmitResponse(request_id=request_id)


def mark_enqueue_failed(services: ApiServices, request_id: str, reason: str) -> None:
    # ConditionFailed: a worker got to it after all (the send succeeded despite the error).
    with contextlib.suppress(ConditionFailed):
        call_aws(
            services.dynamodb.update_item,
            **job_table.fail_queued_job(
                services.settings.table_name,
                request_id=request_id,
                reason=f"enqueue failed: {reason}",
                now=services.clock(),
            ),
        )


def check_request_id(request_id: str) -> None:
    """A request id that cannot be one is not found, before any read."""
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise NotFound(f"request {request_id!r} not found") from None


def get_job(services: ApiServices, *, owner: str, request_id: str) -> JobRecord:
    check_request_id(request_id)
    found = call_aws(
        services.dynamodb.get_item, **job_table.get_job(services.settings.table_name, request_id)
    )
    item = found.get("Item")
    # Another key's job answers exactly like a missing one: no existence oracle.
    if not item or item["owner"]["S"] != owner:
        raise NotFound(f"request {request_id!r} not found")
    return JobRecord.from_item(item)


def wait_for_final(
    services: ApiServices, *, owner: str, request_id: str, timeout: float
) -> JobRecord:
    """Poll the record until it is final or `timeout` passes; returns the last record seen."""
    deadline = services.clock() + timeout
    interval = services.settings.sync_poll_interval_seconds
    while True:
        record = get_job(services, owner=owner, request_id=request_id)
        remaining = deadline - services.clock()
        if record.status.is_final or remaining <= 0:
            return record
        services.sleep(min(interval, remaining))
        interval = min(interval * 1.5, 0.5)
