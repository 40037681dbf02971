"""template.yaml declares the routes, queues and environment the code expects. (That cfn-lint
finds nothing in it: tests/e2e/test_template_lint.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from infra.template import (
    http_routes,
    load_template,
    resources_of_type,
    websocket_route_selection_expression,
    websocket_routes,
    websocket_stage,
)

EXPECTED_ROUTES = {
    ("POST", "/v1/llm/completions-async", "handlers.submit.handle_async"),
    ("POST", "/v1/llm/completions-sync", "handlers.submit.handle_sync"),
    ("GET", "/v1/llm/completions/{request_id}", "handlers.status.handler"),
    ("POST", "/v1/llm/completions/{request_id}/cancel", "handlers.cancel.handler"),
    ("POST", "/v1/llm/completions/{request_id}/retry", "handlers.retry.handler"),
    ("GET", "/v1/llm/model-endpoints", "handlers.model_endpoints.handler"),
    (
        "GET",
        "/v1/llm/model-endpoints/{model_endpoint_name}",
        "handlers.model_endpoints.handle_get",
    ),
    (
        "GET",
        "/v1/llm/completions/{request_id}/deliveries",
        "handlers.webhooks.list_deliveries",
    ),
    (
        "POST",
        "/v1/llm/completions/{request_id}/deliveries/redeliver",
        "handlers.webhooks.redeliver",
    ),
    ("GET", "/v1/webhooks/secret", "handlers.webhooks.get_secret"),
    ("POST", "/v1/webhooks/secret/rotate", "handlers.webhooks.rotate_secret"),
    # OpenAI's API (README "OpenAI-compatible"): one function serves a route and its /v2/ twin.
    ("POST", "/v1/completions", "handlers.openai_completions.handler"),
    ("POST", "/v2/completions", "handlers.openai_completions.handler"),
    ("POST", "/v1/chat/completions", "handlers.openai_chat.handler"),
    ("POST", "/v2/chat/completions", "handlers.openai_chat.handler"),
    ("GET", "/v1/models", "handlers.openai_models.handler"),
    ("GET", "/v1/models/{model}", "handlers.openai_models.handle_get"),
    # OpenAI's Batch API (README "OpenAI Batch API").
    ("POST", "/v1/files", "handlers.batch_files.handle_create"),
    ("GET", "/v1/files/{file_id}", "handlers.batch_files.handle_get"),
    ("GET", "/v1/files/{file_id}/content", "handlers.batch_files.handle_content"),
    ("DELETE", "/v1/files/{file_id}", "handlers.batch_files.handle_delete"),
    ("POST", "/v1/batches", "handlers.batches.handle_create"),
    ("GET", "/v1/batches", "handlers.batches.handle_list"),
    ("GET", "/v1/batches/{batch_id}", "handlers.batches.handle_get"),
    ("POST", "/v1/batches/{batch_id}/cancel", "handlers.batches.handle_cancel"),
}
# OpenAI's Batch API's (tests/unit/test_template_batch.py).
BATCH_API_FUNCTIONS = (
    {f"{name}Function" for name in ("CreateFile", "GetFile", "DeleteFile")}
    | {f"{name}Function" for name in ("FileContent", "CreateBatch", "GetBatch", "ListBatches")}
    | {"CancelBatchFunction"}
)
# Functions an event source mapping invokes (README "Event-driven use", "OpenAI Batch API").
EVENT_FUNCTIONS = {
    "IntakeFunction",
    "JobEventsFunction",
    "WebhookSenderFunction",
    "BatchFanoutFunction",
    "BatchProgressFunction",
}

# WebSocket route key -> the function serving it.
WEBSOCKET_FUNCTIONS = {
    "$connect": "ConnectFunction",
    "$disconnect": "DisconnectFunction",
    "complete": "CompleteFunction",
    "subscribe": "SubscribeFunction",
    "cancel": "CancelFunction",
    "$default": "DefaultFunction",
}
TWO_WAY_ROUTES = {"complete", "subscribe", "cancel", "$default"}

EXPECTED_ENVIRONMENT = {
    "HEADRACE_TABLE_NAME": {"Ref": "JobsTable"},
    "HEADRACE_QUEUE_NAME": {"Fn::GetAtt": ["JobsQueue", "QueueName"]},
    "HEADRACE_DLQ_NAME": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]},
    "HEADRACE_MODELS_BUCKET": {"Ref": "ModelsBucket"},
    "HEADRACE_MODEL_ZOO": {"Ref": "ModelZoo"},
    "HEADRACE_VISIBILITY_TIMEOUT_SECONDS": {"Ref": "VisibilityTimeoutSeconds"},
    "HEADRACE_MAX_RECEIVE_COUNT": {"Ref": "MaxReceiveCount"},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_is_a_sam_template(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    function_globals = template["Globals"]["Function"]
    assert function_globals["Runtime"] in {"python3.11", "python3.12"}
    assert function_globals["Timeout"] == 30
    assert function_globals["CodeUri"] == "."


def test_http_routes_map_to_handlers(template: dict[str, Any]) -> None:
    routes = http_routes(template)
    assert {(r.method, r.path, r.handler) for r in routes} == EXPECTED_ROUTES
    assert len(routes) == len(EXPECTED_ROUTES)
    assert all(r.timeout_seconds == 30 for r in routes)


def test_every_route_is_on_the_http_api_with_payload_v2(template: dict[str, Any]) -> None:
    functions = resources_of_type(template, "AWS::Serverless::Function")
    http_functions = {k: f for k, f in functions.items() if f["Properties"].get("Events")}
    assert set(http_functions) == {
        "RetryCompletionFunction",
        "SubmitAsyncFunction",
        "SubmitSyncFunction",
        "GetCompletionFunction",
        "CancelCompletionFunction",
        "ModelEndpointsFunction",
        "GetModelEndpointFunction",
        "ListDeliveriesFunction",
        "RedeliverFunction",
        "GetWebhookSecretFunction",
        "RotateWebhookSecretFunction",
        "OpenAICompletionsFunction",
        "OpenAIChatFunction",
        "OpenAIModelsFunction",
        "OpenAIModelFunction",
        *BATCH_API_FUNCTIONS,
    }
    # The others serve the WebSocket API (no SAM event source: plain ApiGatewayV2 resources),
    # or are invoked by an event source mapping (AWS::Lambda::EventSourceMapping).
    # And the streaming route is a Function URL (tests/unit/test_template_stream.py).
    others = set(WEBSOCKET_FUNCTIONS.values()) | EVENT_FUNCTIONS | {"CompletionsStreamFunction"}
    assert set(functions) - set(http_functions) == others
    for function in http_functions.values():
        for event in function["Properties"]["Events"].values():
            assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
            assert event["Properties"]["PayloadFormatVersion"] == "2.0"
    assert template["Resources"]["HttpApi"]["Type"] == "AWS::Serverless::HttpApi"


def test_queue_redrives_to_the_dead_letter_queue(template: dict[str, Any]) -> None:
    queue = template["Resources"]["JobsQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert queue["Properties"]["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
    assert template["Resources"]["JobsDeadLetterQueue"]["Type"] == "AWS::SQS::Queue"


def test_jobs_table_shape(template: dict[str, Any]) -> None:
    props = template["Resources"]["JobsTable"]["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_functions_and_worker_get_the_same_settings(template: dict[str, Any]) -> None:
    function_env = template["Globals"]["Function"]["Environment"]["Variables"]
    for name, value in EXPECTED_ENVIRONMENT.items():
        assert function_env[name] == value, name
    container = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    worker_env = {item["Name"]: item["Value"] for item in container[0]["Environment"]}
    for name, value in function_env.items():
        assert worker_env[name] == value, name
    assert container[0]["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]


def _policy_actions(function: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for policy in function["Properties"].get("Policies", []):
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            assert statement["Resource"] != "*"
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_functions_get_least_privilege(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for name in ("SubmitAsyncFunction", "SubmitSyncFunction"):
        assert _policy_actions(resources[name]) == {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",  # the Idempotency-Key of a failed submit
            "sqs:GetQueueUrl",
            "sqs:SendMessage",
        }
    submit = {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    }
    assert _policy_actions(resources["OpenAICompletionsFunction"]) == submit
    # Chat reads the model's chat template from its artifact.
    assert _policy_actions(resources["OpenAIChatFunction"]) == submit | {
        "s3:GetObject",
        "s3:ListBucket",
    }
    for name in ("OpenAIModelsFunction", "OpenAIModelFunction"):
        assert _policy_actions(resources[name]) == {"dynamodb:GetItem"}
    for name in ("ModelEndpointsFunction", "GetModelEndpointFunction"):
        assert _policy_actions(resources[name]) == {"dynamodb:GetItem", "dynamodb:BatchGetItem"}
    assert _policy_actions(resources["GetCompletionFunction"]) == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",  # a queued job's capacity: the workers of its model
    }
    assert _policy_actions(resources["CancelCompletionFunction"]) == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "execute-api:ManageConnections",
    }


def test_outputs(template: dict[str, Any]) -> None:
    assert {
        "HttpApiUrl",
        "WebSocketUrl",
        "JobsQueueUrl",
        "JobsTableName",
        "ModelsBucketName",
        "JobsDeadLetterQueueUrl",
    } <= set(template["Outputs"])


# --- WebSocket API ----------------------------------------------------------------------------


def test_websocket_api_and_stage(template: dict[str, Any]) -> None:
    api = template["Resources"]["WebSocketApi"]
    assert api["Type"] == "AWS::ApiGatewayV2::Api"
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    assert websocket_route_selection_expression(template) == "$request.body.action"
    stage = template["Resources"]["WebSocketStage"]["Properties"]
    assert stage["ApiId"] == {"Ref": "WebSocketApi"}
    assert stage["AutoDeploy"] is True
    assert websocket_stage(template) == "ws"
    url = template["Outputs"]["WebSocketUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("wss://${WebSocketApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/")


def test_websocket_routes_map_to_handlers(template: dict[str, Any]) -> None:
    routes = {r.route_key: r for r in websocket_routes(template)}
    assert {k: r.function_logical_id for k, r in routes.items()} == WEBSOCKET_FUNCTIONS
    for key, route in routes.items():
        name = key.removeprefix("$")
        assert route.handler == f"handlers.websocket.{name}"
        assert route.two_way == (key in TWO_WAY_ROUTES), key
        assert route.timeout_seconds == 30


def test_websocket_routes_are_wired_like_api_gateway_needs(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    routes = resources_of_type(template, "AWS::ApiGatewayV2::Route")
    assert {r["Properties"]["RouteKey"] for r in routes.values()} == set(WEBSOCKET_FUNCTIONS)
    responses = resources_of_type(template, "AWS::ApiGatewayV2::RouteResponse")
    permissions = resources_of_type(template, "AWS::Lambda::Permission")
    for logical_id, route in routes.items():
        props = route["Properties"]
        key = props["RouteKey"]
        function = WEBSOCKET_FUNCTIONS[key]
        assert props["ApiId"] == {"Ref": "WebSocketApi"}
        integration_id = props["Target"]["Fn::Sub"].removeprefix("integrations/${")[:-1]
        integration = resources[integration_id]["Properties"]
        assert integration["IntegrationType"] == "AWS_PROXY"
        assert integration["IntegrationUri"] == {
            "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/"
            f"functions/${{{function}.Arn}}/invocations"
        }
        assert integration["TimeoutInMillis"] <= 29000
        two_way = key in TWO_WAY_ROUTES
        assert (props.get("RouteResponseSelectionExpression") == "$default") == two_way
        route_responses = [
            r["Properties"]
            for r in responses.values()
            if r["Properties"]["RouteId"] == {"Ref": logical_id}
        ]
        assert route_responses == (
            [
                {
                    "ApiId": {"Ref": "WebSocketApi"},
                    "RouteId": {"Ref": logical_id},
                    "RouteResponseKey": "$default",
                }
            ]
            if two_way
            else []
        )
        (permission,) = [
            p["Properties"]
            for p in permissions.values()
            if p["Properties"]["FunctionName"] == {"Ref": function}
        ]
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert permission["Action"] == "lambda:InvokeFunction"
        assert permission["SourceArn"] == {
            "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
            f"${{WebSocketApi}}/*/{key}"
        }


MANAGE_CONNECTIONS = (
    "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
    "${WebSocketApi}/${WebSocketStage}/%s/@connections/*"
)


def _statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in function["Properties"].get("Policies", []) for s in p["Statement"]]


def test_websocket_functions_get_least_privilege(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    table = ["dynamodb:GetItem", "dynamodb:PutItem"]
    expected = {
        "ConnectFunction": set(table),
        "DisconnectFunction": {"dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"},
        "CompleteFunction": {
            *table,
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",  # the idempotency_key of a failed submit
            "dynamodb:Query",  # a repeated idempotency_key replays a finished job
            "sqs:GetQueueUrl",
            "sqs:SendMessage",
            "execute-api:ManageConnections",
        },
        "SubscribeFunction": {
            *table,
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "execute-api:ManageConnections",
        },
        "CancelFunction": {
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "execute-api:ManageConnections",
        },
        "DefaultFunction": set(),
    }
    for name, actions in expected.items():
        assert _policy_actions(resources[name]) == actions, name
        for statement in _statements(resources[name]):
            if statement["Action"] == "execute-api:ManageConnections":
                # DELETE: a frame on a connection of a revoked key closes it.
                assert statement["Resource"] == [
                    {"Fn::Sub": MANAGE_CONNECTIONS % method} for method in ("POST", "DELETE")
                ]
            elif str(statement["Action"]).startswith("dynamodb") or "dynamodb:" in str(
                statement["Action"]
            ):
                assert statement["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}


def test_worker_may_manage_connections_of_this_api_only(template: dict[str, Any]) -> None:
    role = template["Resources"]["WorkerTaskRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    (manage,) = [s for s in statements if s["Action"] == "execute-api:ManageConnections"]
    assert manage["Resource"] == [
        {"Fn::Sub": MANAGE_CONNECTIONS % method} for method in ("POST", "GET", "DELETE")
    ]
    table_actions = {
        action
        for s in statements
        if s["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}
        for action in s["Action"]
    }
    assert {"dynamodb:Query", "dynamodb:DeleteItem"} <= table_actions
