"""The Lambda handlers of template.yaml, called as Lambda calls them, with the sample events of
tests/events: what they answer before any AWS call. Every AWS client they are given fails the
test if called; tests/e2e/test_handlers_aws.py has the answers that need the table."""

from __future__ import annotations

from typing import Any

import pytest

import handlers.http
from handlers.http import HttpApiEvent
from handlers.websocket import WebSocketEvent
from headrace.api.services import ApiServices
from headrace.core.settings import Settings
from tests.events import BATCH_EVENTS, HTTP_EVENTS, OPENAI_EVENTS, WEBSOCKET_EVENTS, load_event
from tests.handler_support import (
    CONNECTION_ID,
    HTTP_HANDLERS,
    KEY,
    MODEL_ZOO,
    WEBSOCKET_HANDLERS,
    http_answer,
    use_services,
    websocket_error,
    with_body,
)

MISSING_KEY = "missing API key: send it in the x-api-key header"
MALFORMED = "internal error: malformed gateway event"
KNOWN_ACTIONS = "complete, subscribe, cancel"


class NoCalls:
    """An AWS client these tests must not reach: any call fails."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __getattr__(self, operation: str) -> Any:
        raise AssertionError(f"unexpected {self.service} call: {operation}")


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(model_zoo=MODEL_ZOO)
    services = ApiServices(settings=settings, dynamodb=NoCalls("dynamodb"), sqs=NoCalls("sqs"))
    use_services(monkeypatch, services)


# --- the sample events are the template's routes, and the handlers' models read them


def test_every_route_of_the_template_has_a_sample_event() -> None:
    assert set(HTTP_EVENTS) | set(OPENAI_EVENTS) | set(BATCH_EVENTS) == set(HTTP_HANDLERS)
    assert set(WEBSOCKET_EVENTS) == set(WEBSOCKET_HANDLERS)


@pytest.mark.parametrize("route_key", HTTP_EVENTS)
def test_every_http_event_parses_into_the_handlers_model(route_key: str) -> None:
    raw = load_event(HTTP_EVENTS[route_key])
    event = HttpApiEvent.model_validate(raw)
    assert event.route_key == event.request_context.http.method + " " + route_key.split(" ")[1]
    assert event.raw_path == event.request_context.http.path == raw["rawPath"]
    assert event.request_context.request_id == raw["requestContext"]["requestId"]
    assert event.api_key() == KEY
    assert event.body_bytes() == raw.get("body", "").encode()
    assert event.query("model_endpoint_name") == raw.get("queryStringParameters", {}).get(
        "model_endpoint_name"
    )
    assert event.path_parameters == raw.get("pathParameters")


@pytest.mark.parametrize("route_key", WEBSOCKET_EVENTS)
def test_every_websocket_event_parses_into_the_handlers_model(route_key: str) -> None:
    raw = load_event(WEBSOCKET_EVENTS[route_key])
    event = WebSocketEvent.model_validate(raw)
    context = event.request_context
    assert context.route_key == route_key
    assert context.connection_id == CONNECTION_ID
    assert (context.domain_name, context.stage) == (raw["requestContext"]["domainName"], "ws")
    assert context.event_type == {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(
        route_key, "MESSAGE"
    )
    assert event.body == raw.get("body")
    assert event.api_key() == (KEY if route_key == "$connect" else None)


# --- HTTP routes


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize("route_key", HTTP_EVENTS)
def test_a_missing_api_key_is_401_with_a_detail(route_key: str) -> None:
    event = load_event(HTTP_EVENTS[route_key])
    del event["headers"]["x-api-key"]
    assert http_answer(route_key, event) == (401, {"detail": MISSING_KEY})


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize("route_key", HTTP_EVENTS)
@pytest.mark.parametrize("spoil", ["no requestContext", "payload 1.0", "headers not a map"])
def test_a_malformed_event_is_a_500_without_a_traceback(
    route_key: str, spoil: str, caplog: pytest.LogCaptureFixture
) -> None:
    event = load_event(HTTP_EVENTS[route_key])
    if spoil == "no requestContext":
        del event["requestContext"]
    elif spoil == "payload 1.0":
        event["version"] = "1.0"
    else:
        event["headers"] = ["x-api-key", KEY]
    status, body = http_answer(route_key, event)
    assert (status, body) == (500, {"detail": MALFORMED})
    # The reason goes to the log, never to the caller.
    assert [r.exc_info is not None for r in caplog.records if r.name == "headrace.api"] == [True]
    assert "ValidationError" in caplog.text and "Traceback" in caplog.text


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize("route_key", HTTP_EVENTS)
def test_an_unexpected_error_is_a_500_naming_the_gateway_request(
    route_key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Authentication is the first work of every route: an error no layer maps to a status.
    def failing_authenticate(services: ApiServices, api_key: str | None) -> str:
        raise RuntimeError("s3cr3t internals")

    monkeypatch.setattr(handlers.http, "authenticate", failing_authenticate)
    event = load_event(HTTP_EVENTS[route_key])
    request_id = event["requestContext"]["requestId"]
    status, body = http_answer(route_key, event)
    assert (status, body) == (500, {"detail": f"internal error (gateway request {request_id})"})
    # The 500 is that error's (a NoCalls client's AssertionError would read the same).
    assert "RuntimeError: s3cr3t internals" in caplog.text


# --- WebSocket routes


@pytest.mark.usefixtures("no_aws")
def test_connect_without_a_key_is_refused_401() -> None:
    event = load_event(WEBSOCKET_EVENTS["$connect"])
    del event["headers"]["x-api-key"], event["multiValueHeaders"]["x-api-key"]
    del event["queryStringParameters"], event["multiValueQueryStringParameters"]
    assert websocket_error("$connect", event) == (401, MISSING_KEY)


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize("route_key", WEBSOCKET_EVENTS)
@pytest.mark.parametrize("spoil", ["no connectionId", "unknown eventType", "body not a string"])
def test_a_malformed_websocket_event_is_a_500_without_a_traceback(
    route_key: str, spoil: str
) -> None:
    event = load_event(WEBSOCKET_EVENTS[route_key])
    if spoil == "no connectionId":
        del event["requestContext"]["connectionId"]
    elif spoil == "unknown eventType":
        event["requestContext"]["eventType"] = "UPGRADE"
    else:
        event["body"] = {"action": "complete"}
    assert websocket_error(route_key, event) == (500, MALFORMED)


SEND_AN_ACTION = f'send {{"action": ...}} with one of: {KNOWN_ACTIONS}'


@pytest.mark.usefixtures("no_aws")
@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (None, f"action: unknown action 'pause'; known actions: {KNOWN_ACTIONS}"),
        ({"prompt": "The river"}, f"action: field required; known actions: {KNOWN_ACTIONS}"),
        ("not json", f"frame: not valid JSON; {SEND_AN_ACTION}"),
        ('["complete"]', f"frame: must be a JSON object; {SEND_AN_ACTION}"),
    ],
)
def test_the_default_route_says_which_actions_there_are(frame: Any, message: str) -> None:
    """The sample event's frame (frame None) names an action no route serves."""
    event = with_body("$default", frame) if frame else load_event(WEBSOCKET_EVENTS["$default"])
    assert websocket_error("$default", event) == (400, message)
