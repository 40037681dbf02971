"""Toy WebSocket Lambda handlers behind tests/gateway_fixtures/ws_template.yaml.

Every $connect and $disconnect event is recorded, so a test can wait for the one of its own
connection (`wait_for`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

_recorded: list[dict[str, Any]] = []
_changed = threading.Condition()


def _record(event: dict[str, Any]) -> None:
    with _changed:
        _recorded.append(event)
        _changed.notify_all()


def wait_for(predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
    """The first recorded event matching `predicate`, waiting up to `timeout` for it."""

    def find() -> dict[str, Any] | None:
        return next((e for e in _recorded if predicate(e)), None)

    with _changed:
        found = _changed.wait_for(find, timeout)
    assert found is not None, "no such event recorded"
    return found


def recorded(connection_id: str, route_key: str) -> list[dict[str, Any]]:
    with _changed:
        return [
            e
            for e in _recorded
            if e["requestContext"]["connectionId"] == connection_id
            and e["requestContext"]["routeKey"] == route_key
        ]


def connect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _record(event)
    api_key = (event.get("queryStringParameters") or {}).get("api_key")
    if api_key == "bad":
        return {"statusCode": 401, "body": json.dumps({"detail": "unknown API key"})}
    if api_key == "boom":
        raise RuntimeError("connect exploded")
    headers = {name.lower(): value for name, value in event["headers"].items()}
    if "headrace.v1" in headers.get("sec-websocket-protocol", ""):
        # A $connect that accepts a subprotocol must name it in its response.
        return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "headrace.v1"}}
    return {"statusCode": 200}


def disconnect(event: dict[str, Any], context: Any) -> dict[str, Any]:
    _record(event)
    return {"statusCode": 200}


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ctx = {"function_name": context.function_name, "memory": context.memory_limit_in_mb}
    return {"statusCode": 200, "body": json.dumps({"event": event, "context": ctx})}


def management_client(event: dict[str, Any]) -> Any:
    """The @connections client a real handler builds from its event (http: the local gateway)."""
    context = event["requestContext"]
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://{context['domainName']}/{context['stage']}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


def callback(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Posts to the caller through @connections, with what GetConnection says of it."""
    connection_id = event["requestContext"]["connectionId"]
    client = management_client(event)
    try:
        described = client.get_connection(ConnectionId=connection_id)
        data = {
            "via": "callback",
            "connectionId": connection_id,
            "sourceIp": described["Identity"]["SourceIp"],
            "connectedAt": described["ConnectedAt"].isoformat(),
        }
        client.post_to_connection(ConnectionId=connection_id, Data=json.dumps(data).encode())
    finally:
        client.close()
    return {"statusCode": 200}


def quiet(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": "one-way routes send nothing back"}


def boom(event: dict[str, Any], context: Any) -> Any:
    raise RuntimeError("handler exploded")


def sleep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seconds = float(json.loads(event["body"])["seconds"])
    time.sleep(seconds)
    return {"statusCode": 200, "body": json.dumps({"slept": seconds})}


def malformed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": {"not": "a string"}}


def default(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer = {
        "route": event["requestContext"]["routeKey"],
        "body": event["body"],
        "isBase64Encoded": event["isBase64Encoded"],
    }
    return {"statusCode": 200, "body": json.dumps(answer)}
