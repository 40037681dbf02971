"""POST /v1/completions and POST /v2/completions: OpenAI's completions, answered whole."""

from __future__ import annotations

from handlers.http import HttpApiEvent
from handlers.openai_http import complete, openai_endpoint, whole_only
from headrace.api.openai_protocol import parse_completion
from headrace.api.openai_serving import Answer, completion_job
from headrace.api.services import ApiServices


@openai_endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    job = completion_job(services, whole_only(parse_completion(event.body_bytes())))
    return complete(event, services, owner, job)
