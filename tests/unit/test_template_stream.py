"""The streaming route deploys as AWS documents response streaming from a zip-packaged Python
function: the Lambda Web Adapter layer and its wrapper, a Function URL in RESPONSE_STREAM mode,
a start script that serves the app the local gateway serves, and no more IAM than it uses."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from handlers import stream_app, stream_relay
from infra.sam_transform import transform
from infra.template import load_template

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = "CompletionsStreamFunction"


@pytest.fixture(scope="module")
def function() -> dict[str, Any]:
    found: dict[str, Any] = load_template()["Resources"][FUNCTION]["Properties"]
    return found


def test_the_web_adapter_streams_the_function_url(function: dict[str, Any]) -> None:
    assert function["FunctionUrlConfig"] == {"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}
    variables = function["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["AWS_LWA_READINESS_CHECK_PATH"] == stream_app.HEALTH_PATH
    [layer] = function["Layers"]
    condition, chosen, default = layer["Fn::If"]
    assert condition == "HasWebAdapterLayerArn" and chosen == {"Ref": "WebAdapterLayerArn"}
    assert re.fullmatch(
        r"arn:\$\{AWS::Partition\}:lambda:\$\{AWS::Region\}:753240598075:layer:"
        r"LambdaAdapterLayerX86:\d+",
        default["Fn::Sub"],
    )
    # Lambda's 15 minutes; the stream itself ends before them with an event saying so.
    assert function["Timeout"] == 900 and stream_relay.STREAM_SECONDS < 900


def test_the_handler_is_a_start_script_that_serves_the_shared_app(
    function: dict[str, Any],
) -> None:
    script = ROOT / function["Handler"]  # the wrapper runs $LAMBDA_TASK_ROOT/$_HANDLER
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and "\r" not in text
    assert 'exec python3 -m handlers.stream_app --port "${AWS_LWA_PORT:-' in text
    paths = {route.path for route in stream_app.route_defs()}
    assert paths == {"/v1/llm/completions-stream"}


def test_the_function_may_submit_and_read_streams_and_no_more() -> None:
    deployed = transform(parameters={})
    role = deployed["Resources"][f"{FUNCTION}Role"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    grants = {
        (action, str(statement["Resource"]))
        for statement in statements
        for action in statement["Action"]
    }
    table = str({"Fn::GetAtt": ["JobsTable", "Arn"]})
    assert {a for a, r in grants if r == table} == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    }
    assert {a for a, r in grants if r != table} == {
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
        "s3:GetObject",  # chat on OpenAI's routes: the model's chat template
        "s3:ListBucket",
    }
    url = deployed["Resources"][f"{FUNCTION}Url"]["Properties"]
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    # Since October 2025 a public Function URL needs both grants; SAM makes both.
    public = {
        r["Properties"]["Action"]
        for r in deployed["Resources"].values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Ref": FUNCTION}
    }
    assert public == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert deployed["Outputs"]["CompletionsStreamUrl"]["Value"] == {
        "Fn::GetAtt": [f"{FUNCTION}Url", "FunctionUrl"]
    }
