"""The local AWS endpoint checks an update expression once per text, names and keys
(headrace/dev/moto_updates.py), and keeps the tokens of a condition's text: the same text
must still be judged by what it is sent with each time, and answer as DynamoDB does."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.test_local_endpoint_dynamodb import dynamodb_client, key_of, new_table


def update(dynamodb: Any, table: str, expression: str, **more: Any) -> dict[str, Any]:
    answer = dynamodb.update_item(
        TableName=table,
        Key=key_of("item", False),
        UpdateExpression=expression,
        ReturnValues="ALL_NEW",
        **more,
    )
    attributes: dict[str, Any] = answer["Attributes"]
    return attributes


def rejected(dynamodb: Any, table: str, expression: str, **more: Any) -> str:
    with pytest.raises(ClientError) as caught:
        update(dynamodb, table, expression, **more)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return str(caught.value.response["Error"]["Message"])


def test_one_update_text_is_judged_by_the_names_it_comes_with(moto_endpoint: str) -> None:
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=False)
    text = "SET #a = :v"
    for _ in range(2):  # the second time the text's checks have passed once, with other names
        values = {":v": {"S": "x"}}
        assert update(
            dynamodb,
            table,
            text,
            ExpressionAttributeNames={"#a": "a"},
            ExpressionAttributeValues=values,
        )["a"] == {"S": "x"}
        message = rejected(
            dynamodb,
            table,
            text,
            ExpressionAttributeNames={"#a": "pk"},
            ExpressionAttributeValues=values,
        )
        assert "pk" in message and "key" in message.lower()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("SET a = :v, a = :w", "Two document paths overlap"),
        ("SET a = :v SET b = :w", 'The "SET" section can only be used once'),
    ],
)
def test_a_bad_update_text_is_rejected_every_time(moto_endpoint: str, text: str, why: str) -> None:
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=False)
    values = {":v": {"S": "x"}, ":w": {"S": "y"}}
    for _ in range(3):
        assert why in rejected(dynamodb, table, text, ExpressionAttributeValues=values)


def test_one_text_applied_with_new_values_each_time(moto_endpoint: str) -> None:
    """The parsed tree is shared by every use of its text: what one update fills in must not
    show in the next."""
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=False)
    text = (
        "SET n = if_not_exists(n, :zero) + :step,"
        " entries = list_append(if_not_exists(entries, :no), :e)"
    )
    seen = []
    for step in (1, 10, 100):
        values = {
            ":zero": {"N": "0"},
            ":step": {"N": str(step)},
            ":no": {"L": []},
            ":e": {"L": [{"N": str(step)}]},
        }
        item = update(dynamodb, table, text, ExpressionAttributeValues=values)
        seen.append((item["n"]["N"], [e["N"] for e in item["entries"]["L"]]))
    assert seen == [("1", ["1"]), ("11", ["1", "10"]), ("111", ["1", "10", "100"])]


def test_one_condition_text_is_judged_by_the_values_it_comes_with(moto_endpoint: str) -> None:
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=False)
    update(
        dynamodb,
        table,
        "SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "QUEUED"}},
    )
    condition = "#s = :was AND (attribute_not_exists(#o) OR #o = :me)"
    moves = [("RUNNING", "QUEUED", True), ("DONE", "QUEUED", False), ("DONE", "RUNNING", True)]
    for new, was, succeeds in moves:
        try:
            item = update(
                dynamodb,
                table,
                "SET #s = :new",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status", "#o": "holder"},
                ExpressionAttributeValues={
                    ":new": {"S": new},
                    ":was": {"S": was},
                    ":me": {"S": "w1"},
                },
            )
        except ClientError as e:
            assert not succeeds
            assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
        else:
            assert succeeds
            assert item["status"] == {"S": new}
