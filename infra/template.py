"""Read template.yaml so the dev stack builds the same resources and routes the deploy declares."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that keeps CloudFormation short-form intrinsics (!Ref, !GetAtt, ...) as dicts."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition (inside Fn::And, Fn::Or, Fn::Not) have no Fn:: prefix in JSON.
    name = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
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


# --- WebSocket API ------------------------------------------------------------------------------
# SAM has no WebSocket event source: the API is plain AWS::ApiGatewayV2 resources. A route is
# served by Route.Target ("integrations/<id>") -> Integration.IntegrationUri (the Lambda
# invocation ARN naming the function) -> the function's Handler.

WEBSOCKET_API = "AWS::ApiGatewayV2::Api"
WEBSOCKET_STAGE = "AWS::ApiGatewayV2::Stage"
WEBSOCKET_ROUTE = "AWS::ApiGatewayV2::Route"
WEBSOCKET_ROUTE_RESPONSE = "AWS::ApiGatewayV2::RouteResponse"
WEBSOCKET_INTEGRATION = "AWS::ApiGatewayV2::Integration"

_SUB_REF = re.compile(r"\$\{([A-Za-z0-9]+)\}")
_SUB_ARN = re.compile(r"\$\{([A-Za-z0-9]+)\.Arn\}")


@dataclass(frozen=True)
class WebSocketRoute:
    """One route of the WebSocket API: route key -> module.function."""

    route_key: str  # "$connect", "$disconnect", "$default", or an action such as "complete"
    handler: str  # "handlers.websocket.connect"
    function_logical_id: str
    two_way: bool  # a RouteResponse exists: the handler's return body goes back to the client
    timeout_seconds: float  # the function's Timeout (Globals default)


def _ref(value: Any) -> str | None:
    """The logical id of {"Ref": X} (or a plain string id)."""
    if isinstance(value, dict) and set(value) == {"Ref"} and isinstance(value["Ref"], str):
        return value["Ref"]
    return None


def _websocket_api_id(template: dict[str, Any]) -> str:
    apis = [
        logical_id
        for logical_id, res in resources_of_type(template, WEBSOCKET_API).items()
        if res.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"
    ]
    if len(apis) != 1:
        raise ValueError(f"expected one WEBSOCKET AWS::ApiGatewayV2::Api, found {sorted(apis)}")
    return apis[0]


def _sub_text(value: Any) -> str | None:
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        arg = value["Fn::Sub"]
        if isinstance(arg, str):
            return arg
        if isinstance(arg, list) and arg and isinstance(arg[0], str):
            return arg[0]
    return None


def _integration_id(target: Any) -> str | None:
    """`integrations/<IntegrationId>` as !Sub "integrations/${X}" or !Join ["/", [..., !Ref X]]."""
    text = _sub_text(target)
    if text is not None:
        match = _SUB_REF.fullmatch(text.removeprefix("integrations/"))
        return match.group(1) if text.startswith("integrations/") and match else None
    if isinstance(target, dict) and set(target) == {"Fn::Join"}:
        sep, parts = target["Fn::Join"]
        if isinstance(parts, list) and len(parts) == 2 and f"{parts[0]}{sep}" == "integrations/":
            return _ref(parts[1])
    return None


def _function_id(uri: Any) -> str | None:
    """The function of a Lambda invocation URI: ${X.Arn} in a !Sub, or !GetAtt X.Arn in a !Join."""
    text = _sub_text(uri)
    if text is not None:
        found = _SUB_ARN.findall(text)
        return found[0] if len(found) == 1 else None
    if isinstance(uri, dict) and set(uri) == {"Fn::Join"}:
        for part in uri["Fn::Join"][1]:
            if isinstance(part, dict) and set(part) == {"Fn::GetAtt"}:
                target = part["Fn::GetAtt"]
                if isinstance(target, list) and target[1:] == ["Arn"]:
                    return str(target[0])
    return None


def websocket_routes(template: dict[str, Any]) -> list[WebSocketRoute]:
    """The WebSocket API's routes, resolved to the handler of the function each one invokes.

    Raises ValueError for a route whose target this reader cannot follow to a function.
    """
    resources: dict[str, Any] = template.get("Resources", {})
    if not resources_of_type(template, WEBSOCKET_API):
        return []
    api_id = _websocket_api_id(template)
    globals_function = template.get("Globals", {}).get("Function", {})
    functions = resources_of_type(template, "AWS::Serverless::Function")
    two_way = {
        _ref(res.get("Properties", {}).get("RouteId"))
        for res in resources_of_type(template, WEBSOCKET_ROUTE_RESPONSE).values()
    }
    routes: list[WebSocketRoute] = []
    for logical_id, resource in resources_of_type(template, WEBSOCKET_ROUTE).items():
        props = resource.get("Properties", {})
        if _ref(props.get("ApiId")) != api_id:
            continue
        route_key = str(props["RouteKey"])
        integration_id = _integration_id(props.get("Target"))
        integration = resources.get(integration_id or "", {})
        if integration.get("Type") != WEBSOCKET_INTEGRATION:
            raise ValueError(f"route {route_key!r} ({logical_id}): cannot follow its Target")
        integration_props = integration.get("Properties", {})
        if integration_props.get("IntegrationType") != "AWS_PROXY":
            raise ValueError(f"route {route_key!r}: only AWS_PROXY integrations are served")
        function_id = _function_id(integration_props.get("IntegrationUri"))
        if function_id not in functions:
            raise ValueError(f"route {route_key!r}: {integration_id} invokes no known function")
        function_props = functions[function_id].get("Properties", {})
        timeout = float(function_props.get("Timeout", globals_function.get("Timeout", 3)))
        routes.append(
            WebSocketRoute(
                route_key=route_key,
                handler=str(function_props["Handler"]),
                function_logical_id=function_id,
                two_way=logical_id in two_way,
                timeout_seconds=timeout,
            )
        )
    return routes


def websocket_stage(template: dict[str, Any]) -> str:
    """The StageName of the WebSocket API's stage ("ws"): the first path segment of its URL."""
    api_id = _websocket_api_id(template)
    stages = [
        str(res["Properties"]["StageName"])
        for res in resources_of_type(template, WEBSOCKET_STAGE).values()
        if _ref(res.get("Properties", {}).get("ApiId")) == api_id
    ]
    if len(stages) != 1:
        raise ValueError(f"expected one stage of {api_id}, found {stages}")
    return stages[0]


def websocket_route_selection_expression(template: dict[str, Any]) -> str:
    """The API's RouteSelectionExpression, e.g. "$request.body.action"."""
    api = template["Resources"][_websocket_api_id(template)]
    return str(api["Properties"]["RouteSelectionExpression"])


def function_memory_mb(template: dict[str, Any]) -> dict[str, int]:
    """MemorySize per serverless function logical id (Globals default applied)."""
    default = template.get("Globals", {}).get("Function", {}).get("MemorySize")
    memory: dict[str, int] = {}
    for logical_id, res in resources_of_type(template, "AWS::Serverless::Function").items():
        size = res.get("Properties", {}).get("MemorySize", default)
        if isinstance(size, int):
            memory[logical_id] = size
    return memory
