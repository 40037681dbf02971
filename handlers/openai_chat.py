"""POST /v1/chat/completions and POST /v2/chat/completions: OpenAI's chat completions, rendered
with the model's chat template and answered whole."""

from __future__ import annotations

from handlers.http import HttpApiEvent
from handlers.openai_http import complete, openai_endpoint, whole_only
from headrace.api.openai_chat import chat_job
from headrace.api.openai_protocol import parse_chat
from headrace.api.openai_serving import Answer
from headrace.api.services import ApiServices


@openai_endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    job = chat_job(services, whole_only(parse_chat(event.body_bytes())))
    return complete(event, services, owner, job)
