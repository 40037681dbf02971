"""OpenAI's batches: POST /v1/batches, GET /v1/batches, GET /v1/batches/{batch_id},
POST /v1/batches/{batch_id}/cancel. The jobs are made behind the API (handlers.batch_fanout)."""

from __future__ import annotations

from handlers.http import HttpApiEvent
from handlers.openai_http import openai_endpoint
from headrace.api import batches
from headrace.api.batch_protocol import parse_create
from headrace.api.openai_serving import Answer
from headrace.api.services import ApiServices
from headrace.core.errors import InvalidRequest


def _batch_id(event: HttpApiEvent) -> str:
    return (event.path_parameters or {}).get("batch_id", "")


@openai_endpoint
def handle_create(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    request = parse_create(event.body_bytes())
    return Answer(
        200, batches.create(services, owner=owner, request=request).model_dump(mode="json")
    )


@openai_endpoint
def handle_get(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    batch = batches.get(services, owner=owner, batch_id=_batch_id(event))
    return Answer(200, batch.model_dump(mode="json"))


@openai_endpoint
def handle_cancel(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    batch = batches.cancel(services, owner=owner, batch_id=_batch_id(event))
    return Answer(200, batch.model_dump(mode="json"))


@openai_endpoint
def handle_list(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    raw_limit = event.query("limit") or "20"
    if not raw_limit.isdigit():
        raise InvalidRequest("limit: an integer from 1 to 100")
    found = batches.listing(services, owner=owner, limit=int(raw_limit), after=event.query("after"))
    return Answer(200, found.model_dump(mode="json"))
