"""GET /v1/models and GET /v1/models/{model}: the model zoo in OpenAI's model shape."""

from __future__ import annotations

from handlers.http import HttpApiEvent
from handlers.openai_http import openai_endpoint
from headrace.api.openai_serving import Answer, model_card, model_list
from headrace.api.services import ApiServices


@openai_endpoint
def handler(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    return Answer(200, model_list(services).model_dump(mode="json"))


@openai_endpoint
def handle_get(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    name = (event.path_parameters or {}).get("model", "")
    return Answer(200, model_card(services, name).model_dump(mode="json"))
