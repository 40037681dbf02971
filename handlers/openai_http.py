"""What the OpenAI-compatible handlers share: handlers.http's event and auth, with every error in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from handlers.http import HttpApiEvent
from headrace.api import idempotency
from headrace.api.auth import authenticate
from headrace.api.openai_protocol import SamplingRequest
from headrace.api.openai_responses import error_from, error_of
from headrace.api.openai_serving import Answer, OpenAIJob, answer
from headrace.api.services import ApiServices, default_services
from headrace.core.errors import HeadraceError, InvalidRequest
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.api")

# A route answers JSON (an Answer), or a response of its own (a file's content, a redirect).
Route = Callable[[HttpApiEvent, ApiServices, str], Answer | dict[str, Any]]
_R = TypeVar("_R", bound=SamplingRequest)


def response(result: Answer) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if result.request_id:
        headers["x-request-id"] = result.request_id
    if result.retry is not None:
        headers["x-should-retry"] = "true" if result.retry else "false"
    return {"statusCode": result.status, "headers": headers, "body": json.dumps(result.body)}


def error_answer(e: HeadraceError) -> Answer:
    return Answer(e.status_code, error_from(e).model_dump(mode="json"))


def openai_endpoint(route: Route) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Lambda entry point around `route(event, services, owner)`, as handlers.http.endpoint,
    answering errors in OpenAI's shape."""

    @functools.wraps(route)
    def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        try:
            event = HttpApiEvent.model_validate(raw_event)
        except ValidationError:
            logger.exception("event is not an API Gateway HTTP API payload 2.0 event")
            internal = error_of(500, "internal error: malformed gateway event")
            return response(Answer(500, internal.model_dump(mode="json")))
        gateway_request_id = event.request_context.request_id
        with request_context(gateway_request_id):
            try:
                services = default_services()
                owner = authenticate(services, event.api_key())
                result = route(event, services, owner)
                return response(result) if isinstance(result, Answer) else result
            except HeadraceError as e:
                if e.status_code >= 500:
                    logger.warning("request failed: %s", e.detail)
                return response(error_answer(e))
            except Exception:
                logger.exception("unhandled error")
                message = f"internal error (gateway request {gateway_request_id})"
                return response(Answer(500, error_of(500, message).model_dump(mode="json")))

    return handler


def whole_only(request: _R) -> _R:
    """The request, unless it asks to stream: API Gateway's HTTP API buffers a function's
    answer, so streams are served where LLM Engine's streaming route is (CompletionsStreamUrl).
    """
    if request.stream:
        raise InvalidRequest(
            "stream: true is served at the streaming URL (the stack's CompletionsStreamUrl),"
            " which serves every OpenAI-compatible route; this one answers whole"
        )
    return request


def complete(event: HttpApiEvent, services: ApiServices, owner: str, job: OpenAIJob) -> Answer:
    """A non-streamed completion or chat request: submit, then wait up to the sync wait."""
    key = idempotency.key_from_headers(event.headers)
    return answer(services, owner=owner, job=job, key=key)
