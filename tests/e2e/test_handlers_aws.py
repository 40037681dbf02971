"""The Lambda handlers of template.yaml, called as Lambda calls them, with the sample events of
tests/events, over real boto3 clients against the moto server and the template's table and
queue: what they refuse once they have read the caller's API key or connection record, and
that a refusal leaves no job behind; and what the model endpoints read from a model's presence
record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from infra.provision import AwsClients, ProvisionedResources
from tests.e2e.handlers_aws_support import (
    handlers_served_by,
    new_stack,
    own_clients,
    stored_keys,
)
from tests.events import HTTP_EVENTS, WEBSOCKET_EVENTS, load_event
from tests.handler_support import (
    CONNECTION_ID,
    KEY,
    MODEL_ZOO,
    http_answer,
    websocket_error,
    with_body,
)

SUBMIT_ROUTES = ["POST /v1/llm/completions-async", "POST /v1/llm/completions-sync"]
ENDPOINT = "https://f6g7h8i9j0.execute-api.us-east-1.amazonaws.com/ws"


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> Iterator[AwsClients]:
    with own_clients(moto_endpoint) as clients:
        yield clients


# A stack is shared by the module's tests (provisioning one costs a second); they only read it,
# and each checks that it left no job behind.
@pytest.fixture(scope="module")
def stack_with_key_and_connection(aws: AwsClients) -> ProvisionedResources:
    """A table holding the sample events' API key, and their connection opened with it."""
    resources = new_stack(aws)
    table = resources.table_name
    now = time.time()
    aws.dynamodb.put_item(**job_table.put_api_key(table, KEY, name="handler tests", now=now))
    aws.dynamodb.put_item(
        **connection_table.put_connection(
            table,
            connection_id=CONNECTION_ID,
            owner=job_table.hash_api_key(KEY),
            endpoint=ENDPOINT,
            now=now,
        )
    )
    return resources


@pytest.fixture(scope="module")
def empty_stack(aws: AwsClients) -> ProvisionedResources:
    return new_stack(aws)


@pytest.fixture
def known_key_and_connection(
    moto_endpoint: str,
    stack_with_key_and_connection: ProvisionedResources,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ProvisionedResources]:
    """The handlers on the stack that knows the sample events' key and connection."""
    with handlers_served_by(moto_endpoint, stack_with_key_and_connection, monkeypatch):
        yield stack_with_key_and_connection


@pytest.fixture
def nothing_stored(
    moto_endpoint: str, empty_stack: ProvisionedResources, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProvisionedResources]:
    """The handlers on a stack whose table holds nothing: no key, no connection."""
    with handlers_served_by(moto_endpoint, empty_stack, monkeypatch):
        yield empty_stack


def assert_no_job(aws: AwsClients, resources: ProvisionedResources) -> None:
    """Nothing was recorded or queued: the table holds no job item, the queue no message."""
    assert [key for key in stored_keys(aws, resources) if key[0].startswith("job#")] == []
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=resources.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(attributes.values()) == {"0"}


# --- HTTP routes


@pytest.mark.parametrize("route_key", SUBMIT_ROUTES)
@pytest.mark.parametrize(
    ("query", "body", "status", "detail"),
    [
        (None, '{"prompt": "The river", "temperature": 3.0}', 400, "temperature: "),
        (None, '{"prompt": "The river", "top_k": -5}', 400, "top_k: "),
        (None, '{"prompt": "The river", "surprise": 1}', 400, "surprise: unknown field"),
        (None, "not json", 422, "body: not valid JSON"),
        (None, "[]", 400, "body: "),
        ({}, '{"prompt": "The river"}', 400, "model: field required"),
        ({"model_endpoint_name": "nope"}, '{"prompt": "x"}', 404, "model 'nope' not found"),
    ],
)
def test_a_request_the_service_refuses_before_any_work_names_its_reason(
    route_key: str,
    query: dict[str, str] | None,
    body: str,
    status: int,
    detail: str,
    aws: AwsClients,
    known_key_and_connection: ProvisionedResources,
) -> None:
    event = load_event(HTTP_EVENTS[route_key])
    event["body"] = body
    if query is not None:
        event["queryStringParameters"] = query
    answer = http_answer(route_key, event)
    assert answer[0] == status, answer
    assert set(answer[1]) == {"detail"} and answer[1]["detail"].startswith(detail), answer
    assert_no_job(aws, known_key_and_connection)


# --- WebSocket routes


@pytest.mark.parametrize(
    ("route_key", "frame", "message"),
    [
        ("complete", "not json", "frame: not valid JSON"),
        ("complete", "[1, 2]", "frame: must be a JSON object"),
        ("complete", {"action": "complete", "prompt": "x", "temperature": 3.0}, "temperature: "),
        ("complete", {"action": "complete", "prompt": "x", "n": 2}, "n: unknown field"),
        ("subscribe", {"action": "subscribe"}, "request_id: field required"),
        ("subscribe", {"action": "subscribe", "request_id": "r", "from_seq": -1}, "from_seq: "),
        ("subscribe", {"action": "subscribe", "request_id": "r", "extra": 1}, "extra: unknown"),
    ],
)
def test_a_frame_that_fails_validation_is_a_400_naming_the_field(
    route_key: str,
    frame: Any,
    message: str,
    aws: AwsClients,
    known_key_and_connection: ProvisionedResources,
) -> None:
    status, error = websocket_error(route_key, with_body(route_key, frame))
    assert status == 400 and error.startswith(message), error
    assert_no_job(aws, known_key_and_connection)


@pytest.mark.parametrize("route_key", ["complete", "subscribe"])
def test_a_frame_on_an_unknown_connection_is_401(
    route_key: str, aws: AwsClients, nothing_stored: ProvisionedResources
) -> None:
    status, error = websocket_error(route_key, load_event(WEBSOCKET_EVENTS[route_key]))
    assert (status, error) == (
        401,
        "this connection is not authenticated; reconnect with an API key",
    )
    assert stored_keys(aws, nothing_stored) == []
    assert_no_job(aws, nothing_stored)


# --- model endpoints: what the model's presence record says


MODEL_ROUTES = ["GET /v1/llm/model-endpoints", "GET /v1/llm/model-endpoints/{model_endpoint_name}"]


def announced(route_key: str) -> tuple[str, bool, int | None]:
    """(status, served, context_length) of the sample events' model, as the route answers."""
    status, body = http_answer(route_key, load_event(HTTP_EVENTS[route_key]))
    assert status == 200, body
    [endpoint] = body.get("model_endpoints", [body])
    return endpoint["status"], endpoint["served"], endpoint["context_length"]


@pytest.mark.parametrize("route_key", MODEL_ROUTES)
def test_a_model_shows_the_context_length_its_worker_announced(
    route_key: str, aws: AwsClients, known_key_and_connection: ProvisionedResources
) -> None:
    table = known_key_and_connection.table_name
    [model] = MODEL_ZOO

    def announce(until: float, context_length: int | None) -> None:
        aws.dynamodb.put_item(
            **job_table.put_presence(
                table, model=model, worker_id="w-1", until=until, context_length=context_length
            )
        )

    try:
        assert announced(route_key) == ("NO_WORKER", False, None)  # no worker ever came
        announce(time.time() + 60, 2048)
        assert announced(route_key) == ("READY", True, 2048)
        announce(time.time() - 1, 2048)  # lapsed: the model's context is still what it was
        assert announced(route_key) == ("NO_WORKER", False, 2048)
        announce(time.time() + 60, None)  # a worker that does not say
        assert announced(route_key) == ("READY", True, None)
    finally:
        aws.dynamodb.delete_item(TableName=table, Key=job_table.presence_key(model))
    assert_no_job(aws, known_key_and_connection)
