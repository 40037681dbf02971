"""Read template.yaml so the dev stack builds the same resources and routes the deploy declares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation short-form intrinsics (!Ref, !GetAtt, ...) as dicts."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.load(f, Loader=_CfnLoader)  # SafeLoader subclass
    return loaded


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


@dataclass(frozen=True)
class HttpRoute:
    """One `HttpApi` event of a serverless function: METHOD /path -> module.function."""

    method: str
    path: str
    handler: str
    function_logical_id: str
    timeout_seconds: float


def http_routes(template: dict[str, Any]) -> list[HttpRoute]:
    globals_function = template.get("Globals", {}).get("Function", {})
    routes: list[HttpRoute] = []
    for logical_id, resource in resources_of_type(template, "AWS::Serverless::Function").items():
        props = resource.get("Properties", {})
        timeout = float(props.get("Timeout", globals_function.get("Timeout", 3)))
        for event in props.get("Events", {}).values():
            if event.get("Type") != "HttpApi":
                continue
            event_props = event.get("Properties", {})
            routes.append(
                HttpRoute(
                    method=str(event_props["Method"]).upper(),
                    path=str(event_props["Path"]),
                    handler=str(props["Handler"]),
                    function_logical_id=logical_id,
                    timeout_seconds=timeout,
                )
            )
    return routes
