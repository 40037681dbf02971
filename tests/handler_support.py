"""Calling the Lambda handlers of template.yaml as Lambda calls them, with the sample events of
tests/events, and reading what they answer: shared by the handler tests with and without AWS."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import pytest

import handlers.http
import handlers.websocket
from headrace.api.services import ApiServices
from headrace.core.contracts import StreamEvent
from infra.template import http_routes, load_template, websocket_routes
from tests.events import WEBSOCKET_EVENTS, load_event

TEMPLATE = load_template()
HTTP_HANDLERS = {f"{r.method} {r.path}": r.handler for r in http_routes(TEMPLATE)}
WEBSOCKET_HANDLERS = {r.route_key: r.handler for r in websocket_routes(TEMPLATE)}
KEY = "hr-example-0123456789abcdef"  # the x-api-key of every sample event
CONNECTION_ID = "WZ4AhdCboAMCKvQ="  # the connectionId of every WebSocket sample event
MODEL_ZOO = {"headrace-tiny": "/models/headrace-tiny"}

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(name: str) -> LambdaHandler:
    """The function a `Handler: module.function` of template.yaml names."""
    module, _, function = name.rpartition(".")
    handler: LambdaHandler = getattr(importlib.import_module(module), function)
    return handler


def use_services(monkeypatch: pytest.MonkeyPatch, services: ApiServices) -> None:
    """Make `services` what every handler gets in place of the cold start's."""
    for module in (handlers.http, handlers.websocket):
        monkeypatch.setattr(module, "default_services", lambda: services)


def http_answer(route_key: str, event: dict[str, Any]) -> tuple[int, Any]:
    response = lambda_handler(HTTP_HANDLERS[route_key])(event, None)
    assert response["headers"]["content-type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def websocket_error(route_key: str, event: dict[str, Any]) -> tuple[int, str]:
    """(status, message) of the error event a WebSocket route answers."""
    response = lambda_handler(WEBSOCKET_HANDLERS[route_key])(event, None)
    error = StreamEvent.model_validate_json(response["body"]).error
    assert error is not None and error.status_code == response["statusCode"]
    return response["statusCode"], error.content.error


def with_body(route_key: str, frame: Any) -> dict[str, Any]:
    """The route's sample event carrying `frame` (JSON-encoded unless it is a string)."""
    event = load_event(WEBSOCKET_EVENTS[route_key])
    event["body"] = frame if isinstance(frame, str) else json.dumps(frame)
    return event
