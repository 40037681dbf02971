"""The webhook routes of the OpenAPI document (headrace.api.openapi): a job's delivery log and
its redelivery, the API key's signing secret."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from headrace.core import routes
from headrace.core.webhook_contracts import DeliveriesView, RedeliverResponse, WebhookSecret

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (DeliveriesView, "serialization"),
    (RedeliverResponse, "serialization"),
    (WebhookSecret, "serialization"),
]

_REQUEST_ID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


def webhook_paths(
    json_of: Callable[[type[BaseModel], str], dict[str, Any]],
    errors: Callable[..., dict[str, Any]],
    conflict: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    secret = json_of(
        WebhookSecret, "The secret (whsec_...), and the one it replaced while it signs"
    )
    return {
        routes.COMPLETION_DELIVERIES: {
            "get": {
                "operationId": "listDeliveries",
                "summary": "Every attempt to deliver the job's events to its callback_url",
                "description": "Oldest first: time, status code, latency, error, the first KB "
                "of the answer, the outcome and when the next retry is due.",
                "parameters": [_REQUEST_ID],
                "responses": {
                    "200": json_of(DeliveriesView, "The attempts"),
                    **errors(401, 404, 429, 500),
                },
            }
        },
        routes.COMPLETION_REDELIVER: {
            "post": {
                "operationId": "redeliverLastEvent",
                "summary": "Deliver the job's last event to its callback_url again",
                "description": "A new round of attempts (retried as a first delivery is), with "
                "the event's own webhook-id.",
                "parameters": [_REQUEST_ID],
                "responses": {
                    "202": json_of(RedeliverResponse, "Scheduled"),
                    **errors(401, 404),
                    "409": conflict("No event of the job was for its callback_url yet"),
                    **errors(429, 500, 503),
                },
            }
        },
        routes.WEBHOOK_SECRET: {
            "get": {
                "operationId": "getWebhookSecret",
                "summary": "The API key's webhook signing secret",
                "description": "Made on first use. Verify deliveries with any Standard Webhooks "
                "library.",
                "responses": {"200": secret, **errors(401, 429, 500)},
            }
        },
        routes.WEBHOOK_SECRET_ROTATE: {
            "post": {
                "operationId": "rotateWebhookSecret",
                "summary": "A new signing secret",
                "description": "The replaced secret still signs, beside the new one, for "
                "HEADRACE_WEBHOOK_SECRET_ROTATION_SECONDS (24 h).",
                "responses": {
                    "200": secret,
                    **errors(401),
                    "409": conflict("Rotated by other requests at the same moment; retry"),
                    **errors(429, 500),
                },
            }
        },
    }
