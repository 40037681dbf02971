"""The webhook routes: a job's delivery log and its redelivery; the key's signing secret."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent, endpoint, json_response
from headrace.api import webhook_secrets, webhooks
from headrace.api.services import ApiServices


def _request_id(event: HttpApiEvent) -> str:
    return (event.path_parameters or {}).get("request_id", "")


@endpoint
def list_deliveries(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    """GET /v1/llm/completions/{request_id}/deliveries."""
    request_id = _request_id(event)
    view = webhooks.list_deliveries(services, owner=owner, request_id=request_id)
    return json_response(200, view.model_dump(mode="json"), request_id)


@endpoint
def redeliver(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    """POST /v1/llm/completions/{request_id}/deliveries/redeliver."""
    request_id = _request_id(event)
    answer = webhooks.redeliver(services, owner=owner, request_id=request_id)
    return json_response(202, answer.model_dump(mode="json"), request_id)


@endpoint
def get_secret(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    """GET /v1/webhooks/secret."""
    secret = webhook_secrets.read(services, owner)
    return json_response(200, secret.model_dump(mode="json", exclude_none=True))


@endpoint
def rotate_secret(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    """POST /v1/webhooks/secret/rotate."""
    secret = webhook_secrets.rotate(services, owner)
    return json_response(200, secret.model_dump(mode="json", exclude_none=True))
