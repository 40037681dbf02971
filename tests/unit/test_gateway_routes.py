"""The local gateway's pieces that serve nothing: routes read from a template, route matching,
handler strings, WebSocket route selection."""

from __future__ import annotations

import dataclasses
import json

import pytest

from headrace.dev.gateway import LocalGateway, import_handler
from headrace.dev.routes import RouteTable
from headrace.dev.websocket import LocalWebSocketApi
from headrace.dev.ws_events import route_selection_key, select_route
from infra.template import (
    HttpRoute,
    load_template,
    websocket_route_selection_expression,
    websocket_routes,
    websocket_stage,
)
from tests.toy_gateway import TEMPLATE, toy_resolver, toy_ws_routes

# --- HTTP API -------------------------------------------------------------------------------------


def test_from_template_reads_routes_and_memory() -> None:
    gateway = LocalGateway.from_template(TEMPLATE, resolver=toy_resolver)
    keys = {f"{r.method} {r.path}" for r in gateway.routes.routes}
    assert "ANY /files/{proxy+}" in keys and "GET /v1/slow" in keys
    assert {r.function_logical_id: r.timeout_seconds for r in gateway.routes.routes}[
        "SlowFunction"
    ] == 5.0
    gateway.resolve_all()


def test_import_handler() -> None:
    func: object = import_handler("json.dumps")
    assert func is json.dumps
    with pytest.raises(ValueError):
        import_handler("nodots")


def test_route_table_rules() -> None:
    def route(method: str, path: str) -> HttpRoute:
        return HttpRoute(method, path, "m.f", "F", 3.0)

    table = RouteTable([route("GET", "/a/{x}"), route("ANY", "/a/b"), route("GET", "/a/{proxy+}")])
    match = table.match("GET", "/a/b")
    assert match is not None and match.route_key == "ANY /a/b"
    match = table.match("GET", "/a/b/c")
    assert match is not None and match.path_parameters == {"proxy": "b/c"}
    assert table.match("POST", "/a/c") is None
    with pytest.raises(ValueError):
        RouteTable([route("GET", "/a/{proxy+}/b")])
    with pytest.raises(ValueError):
        RouteTable([route("GET", "/a"), route("GET", "/a")])


# --- WebSocket API --------------------------------------------------------------------------------


def test_real_template_websocket_routes() -> None:
    template = load_template()
    routes = {r.route_key: r for r in websocket_routes(template)}
    assert {k: (r.handler, r.function_logical_id, r.two_way) for k, r in routes.items()} == {
        "$connect": ("handlers.websocket.connect", "ConnectFunction", False),
        "$disconnect": ("handlers.websocket.disconnect", "DisconnectFunction", False),
        "complete": ("handlers.websocket.complete", "CompleteFunction", True),
        "subscribe": ("handlers.websocket.subscribe", "SubscribeFunction", True),
        "cancel": ("handlers.websocket.cancel", "CancelFunction", True),
        "$default": ("handlers.websocket.default", "DefaultFunction", True),
    }
    assert all(r.timeout_seconds == 30 for r in routes.values())
    assert websocket_stage(template) == "ws"
    assert websocket_route_selection_expression(template) == "$request.body.action"
    api = LocalWebSocketApi.from_template()  # handlers are imported lazily: no import here
    assert api.stage == "ws"
    assert set(api.routes) == set(routes)


def test_toy_template_follows_sub_and_join_forms() -> None:
    routes = {r.route_key: r for r in toy_ws_routes()}
    assert routes["$disconnect"].handler == "toy_ws_handlers.disconnect"  # Fn::Join + GetAtt
    assert routes["echo"].two_way and not routes["callback"].two_way
    assert routes["sleep"].timeout_seconds == 1


def test_route_selection_rules() -> None:
    keys = {"$connect", "$default", "echo"}
    assert select_route('{"action": "echo"}', keys) == "echo"
    for text in ("not json", '{"action": "nope"}', '{"action": 5}', '["echo"]', '"echo"',
                 '{"action": "$connect"}', '{"type": "echo"}', ""):  # fmt: skip
        assert select_route(text, keys) == "$default", text
    assert select_route('{"type": "echo"}', keys, key="type") == "echo"
    assert route_selection_key("$request.body.action") == "action"
    assert route_selection_key("${request.body.type}") == "type"
    with pytest.raises(ValueError):
        route_selection_key("$request.header.x")


def test_routes_are_rejected_when_duplicated() -> None:
    route = toy_ws_routes()[0]
    with pytest.raises(ValueError, match="duplicate"):
        LocalWebSocketApi([route, dataclasses.replace(route, handler="x.y")])
