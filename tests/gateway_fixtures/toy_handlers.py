"""Toy Lambda handlers behind tests/gateway_fixtures/template.yaml."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from typing import Any

SECRET = "s3cr3t-detail-that-must-not-leak"


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answers with the event and the context it was called with."""
    ctx = {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "aws_request_id": context.aws_request_id,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
    }
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-echo": "yes"},
        "body": json.dumps({"event": event, "context": ctx}),
    }


def respond(event: dict[str, Any], context: Any) -> Any:
    """POST: returns the JSON value of the request body as its own result. GET: Decimals."""
    if event["requestContext"]["http"]["method"] == "GET":
        return {"n": Decimal("1.5"), "i": Decimal("2")}
    body = event["body"]
    if event["isBase64Encoded"]:
        body = base64.b64decode(body).decode()
    value = json.loads(body)
    if value == "unserializable":
        return {"statusCode": 200, "body": object()}
    return value


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seconds = float(event.get("queryStringParameters", {}).get("seconds", "0.5"))
    time.sleep(seconds)
    return {"statusCode": 200, "body": json.dumps({"slept": seconds})}


def boom(event: dict[str, Any], context: Any) -> Any:
    if event.get("queryStringParameters", {}).get("exc") == "timeout":
        raise TimeoutError(f"socket timed out: {SECRET}")
    raise RuntimeError(f"handler exploded: {SECRET}")
