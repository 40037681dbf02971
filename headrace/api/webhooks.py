"""Webhooks: schedule an event for a job's callback_url, deliver it (signed, retried with
backoff), keep every attempt, redeliver the last event.

Each delivery attempt is one message of the webhook queue; a retry is a new message sent with
a delay (SQS delays by at most 15 minutes: a longer wait goes round again), so the sender never
waits and a sender that dies mid-attempt leaves its message to be received again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from headrace.api import webhook_secrets
from headrace.api.completions import get_job
from headrace.api.services import ApiServices
from headrace.api.webhook_http import post
from headrace.api.webhook_urls import check_callback_url
from headrace.core.aws_calls import call_aws
from headrace.core.errors import Conflict, InvalidRequest, Unauthorized
from headrace.core.events import CALLBACK_NAMES, CompletionEventDetail, iso, webhook_payload
from headrace.core.tables import deliveries as table
from headrace.core.tables.deliveries import StoredWebhook
from headrace.core.tables.jobs import Item
from headrace.core.webhook_contracts import (
    AttemptOutcome,
    DeliveriesView,
    DeliveryAttempt,
    DeliveryOrder,
    RedeliverResponse,
)

logger = logging.getLogger("headrace.webhooks")

_Query = Callable[[str, str, Item | None], dict[str, Any]]

SQS_MAX_DELAY_SECONDS = 900
# A wait this short is waited out by the sender rather than sent round the queue again.
_SHORT_WAIT_SECONDS = 1.0


def schedule(
    services: ApiServices,
    *,
    request_id: str,
    owner: str,
    url: str,
    detail_type: str,
    detail: CompletionEventDetail,
) -> None:
    """Store the event's webhook body and ask the sender to deliver it."""
    now = services.clock()
    payload = webhook_payload(detail_type, detail, timestamp=iso(now) or "")
    hook = StoredWebhook(request_id, detail.event_id, detail_type, url, owner, payload, now)
    call_aws(
        services.dynamodb.update_item,
        **table.put_webhook(services.settings.table_name, hook, expires_at=_expiry(services)),
    )
    send_order(services, DeliveryOrder(request_id=request_id, event_id=detail.event_id))


def send_order(services: ApiServices, order: DeliveryOrder, delay: float = 0.0) -> None:
    if delay > 0 and order.not_before <= services.clock():
        order = order.model_copy(update={"not_before": services.clock() + delay})
    call_aws(
        services.sqs.send_message,
        QueueUrl=services.named_queue_url(services.settings.webhook_queue_name),
        MessageBody=order.model_dump_json(),
        DelaySeconds=min(SQS_MAX_DELAY_SECONDS, math.ceil(delay)),
    )


def deliver(services: ApiServices, order: DeliveryOrder) -> DeliveryAttempt | None:
    """Make the attempt `order` asks for and record it; None if it is not due yet (sent round
    again) or its event is gone."""
    remaining = order.not_before - services.clock()
    if remaining > _SHORT_WAIT_SECONDS:
        send_order(services, order, delay=remaining)
        return None
    if remaining > 0:
        services.sleep(remaining)
    name = services.settings.table_name
    found = call_aws(
        services.dynamodb.get_item, **table.get_webhook(name, order.request_id, order.event_id)
    )
    if "Item" not in found:
        logger.warning("no stored event %s to deliver (expired?)", order.event_id)
        return None
    hook = StoredWebhook.from_item(found["Item"])
    attempt = _attempt(services, order, hook)
    if attempt.outcome == "retrying":
        delay = services.settings.webhook_retry_delays_seconds[order.attempt - 1]
        attempt = attempt.model_copy(update={"next_retry_at": iso(services.clock() + delay)})
    call_aws(
        services.dynamodb.put_item,
        **table.put_attempt(
            name, order.request_id, attempt, at=services.clock(), expires_at=_expiry(services)
        ),
    )
    if attempt.outcome == "retrying":
        next_order = order.model_copy(update={"attempt": order.attempt + 1, "not_before": 0.0})
        send_order(services, next_order, delay=delay)
    return attempt


def _attempt(services: ApiServices, order: DeliveryOrder, hook: StoredWebhook) -> DeliveryAttempt:
    settings = services.settings
    now = services.clock()
    fields = {
        "event_id": hook.event_id,
        "type": f"completion.{CALLBACK_NAMES[hook.detail_type]}",
        "attempt": order.attempt,
        "redelivery": order.redelivery,
        "at": iso(now),
        "url": hook.url,
    }
    try:
        secrets = webhook_secrets.secrets_of(services, hook.owner).signing(now)
        # Checked again at every delivery: the name may resolve elsewhere since the submit.
        target = check_callback_url(hook.url, allow_loopback=settings.webhook_allow_loopback)
    except Unauthorized:
        return DeliveryAttempt(**fields, outcome="failed", error="the job's API key was revoked")
    except InvalidRequest as e:
        return DeliveryAttempt(**fields, outcome="failed", error=e.detail)
    headers = {
        "webhook-id": hook.event_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": webhook_secrets.signature(secrets, hook.event_id, now, hook.payload),
    }
    result = post(
        target,
        hook.payload.encode(),
        headers,
        connect_timeout=settings.webhook_connect_timeout_seconds,
        read_timeout=settings.webhook_read_timeout_seconds,
    )
    outcome: AttemptOutcome = "delivered"
    if not result.delivered:
        retries_left = order.attempt <= len(settings.webhook_retry_delays_seconds)
        outcome = ("retrying" if retries_left else "given_up") if result.retryable else "failed"
    return DeliveryAttempt(
        **fields,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        response_body=result.body,
        outcome=outcome,
    )


def list_deliveries(services: ApiServices, *, owner: str, request_id: str) -> DeliveriesView:
    job = get_job(services, owner=owner, request_id=request_id)
    attempts = [
        table.attempt_of(item)
        for item in _items(services, table.query_attempts, request_id)
        if "attempt" in item
    ]
    return DeliveriesView(
        request_id=request_id, callback_url=job.request.callback_url, deliveries=attempts
    )


def redeliver(services: ApiServices, *, owner: str, request_id: str) -> RedeliverResponse:
    """Send the job's last event to its callback_url again (a new round of attempts)."""
    get_job(services, owner=owner, request_id=request_id)
    hooks = [StoredWebhook.from_item(i) for i in _items(services, table.query_webhooks, request_id)]
    if not hooks:
        raise Conflict(
            f"request {request_id!r} has no event for a callback_url yet: nothing to redeliver"
        )
    last = max(hooks, key=lambda h: h.created_at)
    order = DeliveryOrder(request_id=request_id, event_id=last.event_id, redelivery=True)
    send_order(services, order)
    kind = CALLBACK_NAMES[last.detail_type]
    return RedeliverResponse(
        request_id=request_id, event_id=last.event_id, type=f"completion.{kind}"
    )


def _items(services: ApiServices, query: _Query, request_id: str) -> Iterator[Item]:
    start = None
    while True:
        page = call_aws(
            services.dynamodb.query, **query(services.settings.table_name, request_id, start)
        )
        yield from page.get("Items", [])
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def _expiry(services: ApiServices) -> int:
    return int(services.clock()) + services.settings.job_ttl_seconds
