"""WebSocket API routes: $connect, $disconnect, complete, subscribe, cancel, $default.

Route responses (two-way routes) carry the acknowledgement or an error event; stream events
arrive through the management API, possibly before the acknowledgement.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from handlers.http import camel_case
from headrace.api import idempotency, job_control
from headrace.api import websocket as websocket_api
from headrace.api.services import ApiServices, default_services
from headrace.core.contracts import (
    StreamEvent,
    SubscribeFrame,
    describe_validation_error,
    parse_completion_request,
)
from headrace.core.control import CancelAck, CancelFrame
from headrace.core.errors import HeadraceError, InvalidRequest
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.api")


class WebSocketRequestContext(BaseModel):
    model_config = camel_case
    route_key: str
    event_type: str = Field(pattern="^(CONNECT|MESSAGE|DISCONNECT)$")
    connection_id: str
    domain_name: str
    stage: str
    request_id: str | None = None


class WebSocketEvent(BaseModel):
    model_config = camel_case
    request_context: WebSocketRequestContext
    headers: dict[str, str] | None = None
    query_string_parameters: dict[str, str] | None = None
    body: str | None = None
    is_base64_encoded: bool = False

    def api_key(self) -> str | None:
        headers = {k.lower(): v for k, v in (self.headers or {}).items()}
        return headers.get("x-api-key") or (self.query_string_parameters or {}).get("api_key")


def _reply(body: BaseModel, status: int = 200) -> dict[str, Any]:
    # The content type matters where the reply is an HTTP answer: a refused $connect.
    headers = {"content-type": "application/json"}
    return {"statusCode": status, "headers": headers, "body": body.model_dump_json()}


def _error(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    return _reply(StreamEvent.failure(request_id, status, message), status)


Route = Callable[[WebSocketEvent, ApiServices], dict[str, Any]]


def route(handler: Callable[[WebSocketEvent, ApiServices], dict[str, Any]]) -> Route:
    """Parse the event, map domain errors to an error event; never let a traceback out."""

    @functools.wraps(handler)
    def wrapped(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        try:
            event = WebSocketEvent.model_validate(raw_event)
        except ValidationError:
            logger.exception("not an API Gateway WebSocket event")
            return _error(500, "internal error: malformed gateway event")
        with request_context(event.request_context.request_id):
            try:
                return handler(event, default_services())
            except HeadraceError as e:
                return _error(e.status_code, e.detail)
            except Exception:
                logger.exception("unhandled error")
                return _error(500, "internal error")

    return wrapped  # type: ignore[return-value]


@route
def connect(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    context = event.request_context
    websocket_api.connect(
        svc,
        connection_id=context.connection_id,
        api_key=event.api_key(),
        endpoint=websocket_api.management_endpoint(svc, context.domain_name, context.stage),
    )
    return {"statusCode": 200}


@route
def disconnect(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    websocket_api.disconnect(svc, connection_id=event.request_context.connection_id)
    return {"statusCode": 200}


def _frame(event: WebSocketEvent) -> dict[str, Any]:
    try:
        frame = json.loads(event.body or "")
    except ValueError:
        raise InvalidRequest("frame: not valid JSON") from None
    except RecursionError:
        raise InvalidRequest("frame: JSON nested too deeply") from None
    if not isinstance(frame, dict):
        raise InvalidRequest("frame: must be a JSON object")
    return frame


@route
def complete(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    conn = websocket_api.connection(svc, event.request_context.connection_id)
    frame = _frame(event)
    key = idempotency.key_from_frame(frame)
    fields = {k: v for k, v in frame.items() if k not in ("action", idempotency.FRAME_FIELD)}
    request = parse_completion_request(json.dumps(fields))
    return _reply(websocket_api.complete(svc, conn, request, key))


@route
def subscribe(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    conn = websocket_api.connection(svc, event.request_context.connection_id)
    try:
        frame = SubscribeFrame.model_validate(_frame(event))
    except ValidationError as e:
        raise InvalidRequest(describe_validation_error(e)) from e
    ack = websocket_api.subscribe(svc, conn, request_id=frame.request_id, from_seq=frame.from_seq)
    return _reply(ack)


@route
def cancel(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    conn = websocket_api.connection(svc, event.request_context.connection_id)
    try:
        frame = CancelFrame.model_validate(_frame(event))
    except ValidationError as e:
        raise InvalidRequest(describe_validation_error(e)) from e
    answer = job_control.cancel(svc, owner=conn.owner, request_id=frame.request_id)
    return _reply(CancelAck(**answer.model_dump()))


@route
def default(event: WebSocketEvent, svc: ApiServices) -> dict[str, Any]:
    known = ", ".join(websocket_api.KNOWN_ACTIONS)
    try:
        action = _frame(event).get("action")
    except InvalidRequest as e:
        return _error(400, f'{e.detail}; send {{"action": ...}} with one of: {known}')
    if action is None:
        return _error(400, f"action: field required; known actions: {known}")
    return _error(400, f"action: unknown action {action!r}; known actions: {known}")
