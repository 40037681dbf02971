"""The toy SAM templates and Lambda handlers of tests/gateway_fixtures/, which the local gateway's
tests serve in place of the real ones. The handler modules are loaded from their files, not
imported as a package: handler strings name them `toy_handlers.*` and `toy_ws_handlers.*`."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from infra.template import HttpRoute, WebSocketRoute, http_routes, load_template, websocket_routes

FIXTURES = Path(__file__).parent / "gateway_fixtures"
TEMPLATE = FIXTURES / "template.yaml"
WS_TEMPLATE = FIXTURES / "ws_template.yaml"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOY_MODULES = {"toy_handlers": _load("toy_handlers"), "toy_ws_handlers": _load("toy_ws_handlers")}
TOY = TOY_MODULES["toy_handlers"]
TOY_WS = TOY_MODULES["toy_ws_handlers"]


def toy_resolver(handler: str) -> Any:
    module, _, name = handler.rpartition(".")
    return getattr(TOY_MODULES[module], name)


def toy_routes(**timeouts: float) -> list[HttpRoute]:
    """The toy template's routes, with Timeout overridden per function logical id."""
    return [
        dataclasses.replace(
            r, timeout_seconds=timeouts.get(r.function_logical_id, r.timeout_seconds)
        )
        for r in http_routes(load_template(TEMPLATE))
    ]


def toy_ws_routes(*without: str) -> list[WebSocketRoute]:
    return [r for r in websocket_routes(load_template(WS_TEMPLATE)) if r.route_key not in without]
