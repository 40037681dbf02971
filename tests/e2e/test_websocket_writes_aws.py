"""What the WebSocket routes write, called as Lambda calls them over real boto3 clients against
the moto server: the items a connection, a `complete` and a `subscribe` leave, that $disconnect
takes every one of its connection's away and nobody else's, and how many DynamoDB writes each
costs (every write is a round trip before the frame is answered, and CPU the local stack
shares with the decoder)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.api.services import ApiServices
from headrace.core.contracts import CompletionRequest
from headrace.core.tables import api_keys as key_table
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from infra.provision import AwsClients, ProvisionedResources
from tests.e2e.handlers_aws_support import (
    handlers_served_by,
    new_stack,
    own_clients,
    stored_keys,
)
from tests.events import WEBSOCKET_EVENTS, load_event
from tests.handler_support import KEY, WEBSOCKET_HANDLERS, lambda_handler

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
KEY_ID = job_table.hash_api_key(KEY)


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> Iterator[AwsClients]:
    with own_clients(moto_endpoint) as clients:
        yield clients


@pytest.fixture
def resources(aws: AwsClients) -> ProvisionedResources:
    """A fresh table that knows the sample events' API key."""
    resources = new_stack(aws)
    aws.dynamodb.put_item(
        **job_table.put_api_key(resources.table_name, KEY, name="ws tests", now=time.time())
    )
    return resources


@pytest.fixture
def services(
    moto_endpoint: str, resources: ProvisionedResources, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ApiServices]:
    with handlers_served_by(moto_endpoint, resources, monkeypatch) as services:
        yield services


class DynamoDbCalls:
    """The DynamoDB operations the handlers' client sends, in order."""

    def __init__(self, services: ApiServices) -> None:
        self.names: list[str] = []
        services.dynamodb.meta.events.register("before-call.dynamodb", self._note)

    def _note(self, **kwargs: Any) -> None:
        self.names.append(kwargs["model"].name)

    def writes(self) -> list[str]:
        names, self.names = self.names, []
        return [name for name in names if name in WRITES]


def call_route(route_key: str, connection_id: str, frame: Any = None) -> dict[str, Any]:
    event = load_event(WEBSOCKET_EVENTS[route_key])
    event["requestContext"]["connectionId"] = connection_id
    if frame is not None:
        event["body"] = json.dumps(frame)
    answer: dict[str, Any] = lambda_handler(WEBSOCKET_HANDLERS[route_key])(event, None)
    return answer


def connect(connection_id: str) -> None:
    assert call_route("$connect", connection_id)["statusCode"] == 200


def complete(connection_id: str) -> str:
    frame = {"action": "complete", "model": "headrace-tiny", "prompt": "The river"}
    answer = json.loads(call_route("complete", connection_id, frame)["body"])
    return str(answer["request_id"])


def subscribe(connection_id: str, request_id: str) -> dict[str, Any]:
    frame = {"action": "subscribe", "request_id": request_id, "from_seq": 0}
    answer = call_route("subscribe", connection_id, frame)
    body: dict[str, Any] = json.loads(answer["body"])
    return {**body, "status_code": answer["statusCode"]}


def items_of(aws: AwsClients, resources: ProvisionedResources, connection_id: str) -> set[str]:
    """pk/sk of every item that names `connection_id`."""
    names = {f"conn#{connection_id}", f"sub#{connection_id}"}
    return {f"{pk} {sk}" for pk, sk in stored_keys(aws, resources) if names & {pk, sk}}


def subscriptions_counted(aws: AwsClients, resources: ProvisionedResources, request_id: str) -> int:
    item = aws.dynamodb.get_item(**job_table.get_job(resources.table_name, request_id))["Item"]
    return int(item["subscriptions"]["N"])


def test_a_complete_records_its_job_and_its_follower_in_one_write(
    aws: AwsClients, resources: ProvisionedResources, services: ApiServices
) -> None:
    calls = DynamoDbCalls(services)
    connect("c1")
    assert calls.writes() == ["TransactWriteItems"]  # the connection and its key's listing
    request_id = complete("c1")
    assert calls.writes() == ["TransactWriteItems"]
    assert items_of(aws, resources, "c1") == {
        "conn#c1 conn",
        f"conn#c1 sub#{request_id}",
        f"apikey#{KEY_ID} conn#c1",
        f"job#{request_id} sub#c1",
    }
    assert subscriptions_counted(aws, resources, request_id) == 1
    messages = aws.sqs.receive_message(QueueUrl=resources.queue_url, MaxNumberOfMessages=10)
    assert [json.loads(m["Body"])["request_id"] for m in messages["Messages"]] == [request_id]


def test_subscribing_writes_once_and_counts_the_follower(
    aws: AwsClients, resources: ProvisionedResources, services: ApiServices
) -> None:
    connect("c1")
    connect("c2")
    request_id = complete("c1")
    calls = DynamoDbCalls(services)
    answer = subscribe("c2", request_id)
    assert (answer["status_code"], answer["request_id"]) == (200, request_id)
    assert calls.writes() == ["TransactWriteItems"]
    assert subscriptions_counted(aws, resources, request_id) == 2
    assert f"job#{request_id} sub#c2" in items_of(aws, resources, "c2")


@pytest.mark.parametrize("whose", ["another key's", "a missing", "a malformed"])
def test_subscribing_to_a_job_not_of_this_key_is_not_found_and_writes_nothing(
    whose: str, aws: AwsClients, resources: ProvisionedResources, services: ApiServices
) -> None:
    request_id = "not-a-request-id" if whose == "a malformed" else str(uuid.uuid4())
    if whose == "another key's":
        new_job = job_table.put_new_job(
            resources.table_name,
            request_id=request_id,
            owner=job_table.hash_api_key("hr-someone-else-0123456789"),
            model="headrace-tiny",
            request=CompletionRequest(prompt="theirs"),
            now=time.time(),
            ttl_seconds=3600,
        )
        aws.dynamodb.put_item(**new_job)
    connect("c1")
    before = stored_keys(aws, resources)
    answer = subscribe("c1", request_id)
    assert answer["status_code"] == 404
    assert answer["error"]["content"]["error"] == f"request {request_id!r} not found"
    assert stored_keys(aws, resources) == before


def test_disconnect_deletes_all_of_its_connection_in_one_write_and_nothing_else(
    aws: AwsClients, resources: ProvisionedResources, services: ApiServices
) -> None:
    connect("c1")
    connect("c2")
    first, second = complete("c1"), complete("c2")
    subscribe("c1", second)
    subscribe("c2", first)
    kept = items_of(aws, resources, "c2")
    calls = DynamoDbCalls(services)
    assert call_route("$disconnect", "c1")["statusCode"] == 200
    assert calls.writes() == ["TransactWriteItems"]
    assert items_of(aws, resources, "c1") == set()
    assert items_of(aws, resources, "c2") == kept
    assert {f"job#{first} job", f"job#{second} job"} <= {
        f"{pk} {sk}" for pk, sk in stored_keys(aws, resources)
    }


def test_a_connection_with_many_subscriptions_is_forgotten_in_transactions_dynamodb_takes() -> None:
    items = [{"pk": {"S": "conn#c"}, "sk": {"S": "conn"}, "owner": {"S": "k"}}] + [
        {"pk": {"S": "conn#c"}, "sk": {"S": f"sub#r{i}"}} for i in range(60)
    ]
    transactions = [t["TransactItems"] for t in connection_table.forget_connection("t", "c", items)]
    assert [len(t) for t in transactions] == [100, 22]
    deleted = [a["Delete"]["Key"] for t in transactions for a in t]
    assert len({json.dumps(k, sort_keys=True) for k in deleted}) == 122
    for transaction in transactions:  # both halves of a subscription go together
        keys = [(a["Delete"]["Key"]["pk"]["S"], a["Delete"]["Key"]["sk"]["S"]) for a in transaction]
        forward = {pk.removeprefix("job#") for pk, sk in keys if sk == "sub#c"}
        reverse = {sk.removeprefix("sub#") for pk, sk in keys if pk == "conn#c" and sk != "conn"}
        assert forward == reverse
    last = transactions[-1]
    assert {"Delete": {"TableName": "t", "Key": connection_table.connection_key("c")}} in last
    listing = key_table.key_connection_key("k", "c")
    assert {"Delete": {"TableName": "t", "Key": listing}} in last
