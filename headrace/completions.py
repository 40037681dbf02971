"""The API's service functions: authenticate, validate, submit, look up, wait. No HTTP here."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from headrace import jobstore
from headrace.aws import translate_client_error
from headrace.contracts import (
    CompletionRequest,
    JobMessage,
    ModelEndpoint,
    SubmitResponse,
)
from headrace.errors import (
    ConditionFailed,
    HeadraceError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Throttled,
    TransientError,
    Unauthorized,
)
from headrace.jobstore import JobRecord
from headrace.settings import Settings

_API_KEY_CACHE_SECONDS = 60.0


@dataclass
class ApiServices:
    """What the HTTP handlers need, built once per cold start and passed to every call."""

    settings: Settings
    dynamodb: Any
    sqs: Any
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    management_client_factory: Callable[[str], Any] | None = None
    _queue_url: str | None = None
    _known_keys: dict[str, float] = field(default_factory=dict)
    _management_clients: dict[str, Any] = field(default_factory=dict)

    def management_client(self, endpoint: str) -> Any:
        """An apigatewaymanagementapi client for a WebSocket API endpoint, created once."""
        client = self._management_clients.get(endpoint)
        if client is None:
            assert self.management_client_factory is not None
            client = self._management_clients[endpoint] = self.management_client_factory(endpoint)
        return client

    def queue_url(self) -> str:
        if self._queue_url is None:
            found = call(self.sqs.get_queue_url, {"QueueName": self.settings.queue_name})
            self._queue_url = str(found["QueueUrl"])
        return self._queue_url


def authenticate(services: ApiServices, api_key: str | None) -> str:
    """The owner id (hash of the key) of a known key; Unauthorized otherwise."""
    if not api_key:
        raise Unauthorized("missing API key: send it in the x-api-key header")
    owner = jobstore.hash_api_key(api_key)
    now = services.clock()
    if services._known_keys.get(owner, 0.0) > now:
        return owner
    try:
        found = services.dynamodb.get_item(
            TableName=services.settings.table_name, Key=jobstore.api_key_key(api_key)
        )
    except ClientError as e:
        raise translate_client_error(e) from e
    if "Item" not in found:
        raise Unauthorized("unknown API key")
    services._known_keys[owner] = now + _API_KEY_CACHE_SECONDS
    return owner


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


_transient = retry(
    retry=retry_if_exception_type((TransientError, Throttled)),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.05, max=0.5),
    reraise=True,
)


def submit(
    services: ApiServices,
    *,
    owner: str,
    request: CompletionRequest,
    model: str,
    before_enqueue: Callable[[str], None] | None = None,
) -> SubmitResponse:
    """Record the job, then enqueue it. A job whose message never left is marked FAILED.

    `before_enqueue(request_id)` runs between the two, e.g. to subscribe a connection before
    any worker can start the job.
    """
    check_limits(services.settings, request)
    settings = services.settings
    request_id = str(uuid.uuid4())
    now = services.clock()
    stored_request = request.model_copy(update={"model": model})
    call(
        services.dynamodb.put_item,
        jobstore.put_new_job(
            settings.table_name,
            request_id=request_id,
            owner=owner,
            model=model,
            request=stored_request,
            now=now,
            ttl_seconds=settings.job_ttl_seconds,
        ),
    )
    if before_enqueue is not None:
        before_enqueue(request_id)
    message = JobMessage(
        request_id=request_id, owner=owner, model=model, request=stored_request, submitted_at=now
    )
    try:
        call(
            services.sqs.send_message,
            {"QueueUrl": services.queue_url(), "MessageBody": message.model_dump_json()},
        )
    except (HeadraceError, BotoCoreError) as e:
        # Whatever went wrong, the recorded job must not sit in QUEUED with no message.
        _mark_enqueue_failed(services, request_id, str(e))
        raise TransientError("could not enqueue the job; it was marked FAILED, retry") from e
    return SubmitResponse(request_id=request_id)


def _mark_enqueue_failed(services: ApiServices, request_id: str, reason: str) -> None:
    # ConditionFailed: a worker got to it after all (the send succeeded despite the error).
    with contextlib.suppress(ConditionFailed):
        call(
            services.dynamodb.update_item,
            jobstore.fail_queued_job(
                services.settings.table_name,
                request_id=request_id,
                reason=f"enqueue failed: {reason}",
                now=services.clock(),
            ),
        )


@_transient
def call(operation: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return operation(**kwargs)
    except ClientError as e:
        raise translate_client_error(e) from e


def get_job(services: ApiServices, *, owner: str, request_id: str) -> JobRecord:
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise NotFound(f"request {request_id!r} not found") from None
    found = call(
        services.dynamodb.get_item, jobstore.get_job(services.settings.table_name, request_id)
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


def model_endpoints(services: ApiServices) -> list[ModelEndpoint]:
    zoo = services.settings.model_zoo
    names = sorted(zoo)
    served: dict[str, float] = {}
    if names:
        table = services.settings.table_name
        found = call(services.dynamodb.batch_get_item, jobstore.get_presences(table, names))
        served = dict(jobstore.served_until(item) for item in found["Responses"].get(table, []))
    now = services.clock()
    return [
        ModelEndpoint(
            name=name,
            status="READY" if served.get(name, 0.0) > now else "NO_WORKER",
            served=served.get(name, 0.0) > now,
            artifact=zoo[name],
        )
        for name in names
    ]
