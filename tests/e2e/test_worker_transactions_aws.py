"""Group commit of transactions (worker/transactions.py) against a real moto server: written
together, one call for many, and a member whose condition fails fails alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra.provision import ProvisionedResources
from tests.e2e.worker_aws_support import CountingAws, fresh_resources, run
from worker.transactions import TransactionGroups, UpdateGroups


@pytest.fixture
def resources(moto_endpoint: str) -> Iterator[ProvisionedResources]:
    with fresh_resources(moto_endpoint, "t") as provisioned:
        yield provisioned


def member(table: str, pk: str) -> list[dict[str, Any]]:
    """Two new items under `pk`, each only if it does not exist yet."""
    return [
        {
            "Put": {
                "TableName": table,
                "Item": {"pk": {"S": pk}, "sk": {"S": sk}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for sk in ("a", "b")
    ]


async def stored_keys(dynamodb: Any, table: str, pks: list[str]) -> list[str]:
    found = []
    for pk in pks:
        answer = await dynamodb.query(
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
        )
        found += [f"{pk}/{item['sk']['S']}" for item in answer["Items"]]
    return found


# Written at once, twelve members (24 actions) go in one call; sixty (120 actions) in two, as a
# transaction holds at most 100.
@pytest.mark.parametrize(("members", "calls"), [(12, 1), (60, 2)])
def test_transactions_written_together_share_calls(
    moto_endpoint: str, resources: ProvisionedResources, members: int, calls: int
) -> None:
    table, pks = resources.table_name, [f"t#{uuid.uuid4()}" for _ in range(members)]

    async def body(dynamodb: Any, sqs: Any) -> tuple[list[bool], dict[str, int], list[str]]:
        aws = CountingAws()
        groups = TransactionGroups(dynamodb=dynamodb, aws=aws)
        results = await asyncio.gather(*(groups.write(member(table, pk)) for pk in pks))
        return list(results), aws.calls, await stored_keys(dynamodb, table, pks)

    results, counted, found = run(moto_endpoint, body)
    assert results == [True] * members
    assert counted == {"transact_write_items": calls}
    assert len(found) == 2 * members


def test_a_member_whose_condition_fails_fails_alone(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table, pks = resources.table_name, [f"t#{uuid.uuid4()}" for _ in range(5)]

    async def body(dynamodb: Any, sqs: Any) -> tuple[list[bool], list[str]]:
        # The fourth member's second item exists already: its condition fails.
        await dynamodb.put_item(TableName=table, Item={"pk": {"S": pks[3]}, "sk": {"S": "b"}})
        groups = TransactionGroups(dynamodb=dynamodb, aws=CountingAws())
        results = await asyncio.gather(*(groups.write(member(table, pk)) for pk in pks))
        return list(results), await stored_keys(dynamodb, table, pks)

    results, found = run(moto_endpoint, body)
    assert results == [True, True, True, False, True]
    # Nothing of the failing member was stored (its "a"), all of the others was.
    assert sorted(found) == sorted(
        [f"{pk}/{sk}" for pk in pks for sk in "ab" if pk != pks[3]] + [f"{pks[3]}/b"]
    )


def counter(table: str, pk: str, expected: int) -> dict[str, Any]:
    """+1 on the item's count, only if it is `expected`; the item back (ALL_NEW)."""
    return {
        "TableName": table,
        "Key": {"pk": {"S": pk}, "sk": {"S": "c"}},
        "UpdateExpression": "SET n = n + :one",
        "ConditionExpression": "n = :expected",
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":expected": {"N": str(expected)}},
        "ReturnValues": "ALL_NEW",
    }


def test_updates_written_together_come_back_with_their_items(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    table, pks = resources.table_name, [f"t#{uuid.uuid4()}" for _ in range(10)]

    async def body(dynamodb: Any, sqs: Any) -> tuple[Any, Any, dict[str, int], Any]:
        for pk in pks:
            await dynamodb.put_item(
                TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "c"}, "n": {"N": "0"}}
            )
        aws = CountingAws()
        groups = UpdateGroups(dynamodb=dynamodb, aws=aws)
        alone = await groups.update(counter(table, pks[0], 0))
        # The sixth expects a count its item does not have: it alone gets None.
        expected = [1, 0, 0, 0, 0, 5, 0, 0, 0, 0]
        together = await asyncio.gather(
            *(groups.update(counter(table, pk, n)) for pk, n in zip(pks, expected, strict=True))
        )
        return alone, together, aws.calls, await stored_keys(dynamodb, table, pks)

    alone, together, calls, found = run(moto_endpoint, body)
    assert alone is not None and alone["n"] == {"N": "1"}
    assert [item["n"]["N"] if item else None for item in together] == (
        ["2", "1", "1", "1", "1", None, "1", "1", "1", "1"]
    )
    assert together[3] is not None and together[3]["pk"] == {"S": pks[3]}
    # One update alone; then a transaction the sixth's condition cancelled, the same without
    # it, and one read of the nine items it left.
    assert calls == {"update_item": 1, "transact_write_items": 2, "batch_get_item": 1}
    assert len(found) == 10


def test_two_updates_of_one_item_are_never_one_transaction(
    moto_endpoint: str, resources: ProvisionedResources
) -> None:
    # A message delivered twice is claimed twice at once; DynamoDB refuses a transaction that
    # names one item twice.
    table, pks = resources.table_name, [f"t#{uuid.uuid4()}" for _ in range(3)]

    async def body(dynamodb: Any, sqs: Any) -> list[Any]:
        for pk in pks:
            await dynamodb.put_item(
                TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "c"}, "n": {"N": "0"}}
            )
        groups = UpdateGroups(dynamodb=dynamodb, aws=CountingAws())
        updates = [counter(table, pk, 0) for pk in [*pks, pks[1]]]
        return list(await asyncio.gather(*(groups.update(u) for u in updates)))

    items = run(moto_endpoint, body)
    # The first claim of the second item wins; the second finds its count moved on.
    assert [item["n"]["N"] if item else None for item in items] == ["1", "1", "1", None]
