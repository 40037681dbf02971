"""The local AWS endpoint's DynamoDB keeps no memory per call, a cancelled transaction
still leaves every item it named as it was (headrace.dev.moto_server rolls a transaction back
by its items, not by a copy of the whole table), and its stream records read back as written
(GetRecords answers in the service's JSON without moto's generic serializer)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from headrace.dev.moto import MOTO_CREDENTIALS, start_moto_server, stop_process


def dynamodb_client(endpoint: str) -> Any:
    session = boto3.session.Session(region_name="eu-west-3", **MOTO_CREDENTIALS)
    return session.client("dynamodb", endpoint_url=endpoint)


def new_table(dynamodb: Any, *, sort_key: bool) -> str:
    name = f"tx-{uuid.uuid4().hex[:8]}"
    keys = [("pk", "HASH"), ("sk", "RANGE")] if sort_key else [("pk", "HASH")]
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in keys],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def key_of(pk: str, sort_key: bool) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "s"}} if sort_key else {"pk": {"S": pk}}


def table_with_stream(endpoint: str, *, sort_key: bool) -> tuple[Any, Any, str, str]:
    """(dynamodb client, streams client, a new table with a NEW_AND_OLD_IMAGES stream, its ARN)."""
    session = boto3.session.Session(region_name="eu-west-3", **MOTO_CREDENTIALS)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    streams = session.client("dynamodbstreams", endpoint_url=endpoint)
    table = new_table(dynamodb, sort_key=sort_key)
    described = dynamodb.update_table(
        TableName=table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return dynamodb, streams, table, described["TableDescription"]["LatestStreamArn"]


@pytest.mark.parametrize("sort_key", [True, False])
def test_a_cancelled_transaction_leaves_every_item_it_named_as_it_was(
    moto_endpoint: str, sort_key: bool
) -> None:
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=sort_key)
    updated, deleted, created = (key_of(k, sort_key) for k in ("updated", "deleted", "new"))
    for key in (updated, deleted):
        dynamodb.put_item(TableName=table, Item={**key, "n": {"N": "1"}, "tag": {"S": "old"}})
    writes = [
        {
            "Update": {
                "TableName": table,
                "Key": updated,
                "UpdateExpression": "SET n = n + :one REMOVE tag",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {"Delete": {"TableName": table, "Key": deleted}},
        {"Put": {"TableName": table, "Item": {**created, "n": {"N": "9"}}}},
    ]
    failing = {
        "ConditionCheck": {
            "TableName": table,
            "Key": key_of("missing", sort_key),
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException):
        dynamodb.transact_write_items(TransactItems=[*writes, failing])

    def item(key: dict[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] | None = dynamodb.get_item(TableName=table, Key=key).get("Item")
        return found

    assert item(updated) == {**updated, "n": {"N": "1"}, "tag": {"S": "old"}}
    assert item(deleted) == {**deleted, "n": {"N": "1"}, "tag": {"S": "old"}}
    assert item(created) is None
    assert len(dynamodb.scan(TableName=table)["Items"]) == 2
    # And without the failing check, the same writes apply.
    dynamodb.transact_write_items(TransactItems=writes)
    assert item(updated) == {**updated, "n": {"N": "2"}}
    assert item(deleted) is None
    assert item(created) == {**created, "n": {"N": "9"}}


@pytest.fixture
def own_endpoint(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A server of this test alone: (pid, URL), so its memory is this test's."""
    process, url = start_moto_server(log_file=tmp_path / "moto.log")
    try:
        yield process.pid, url
    finally:
        stop_process(process)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_transactions_and_missed_reads_keep_no_memory(own_endpoint: tuple[int, str]) -> None:
    pid, url = own_endpoint
    dynamodb = dynamodb_client(url)
    table = new_table(dynamodb, sort_key=True)
    for start in range(0, 1000, 25):
        batch = [
            {"PutRequest": {"Item": {**key_of(f"job-{i}", True), "body": {"S": "x" * 300}}}}
            for i in range(start, start + 25)
        ]
        dynamodb.batch_write_item(RequestItems={table: batch})

    def subscribe_and_leave(i: int) -> None:
        connection = {"pk": {"S": f"conn#{uuid.uuid4().hex}"}, "sk": {"S": f"sub#{i}"}}
        dynamodb.transact_write_items(
            TransactItems=[{"Put": {"TableName": table, "Item": connection}}]
        )
        dynamodb.transact_write_items(
            TransactItems=[{"Delete": {"TableName": table, "Key": connection}}]
        )
        dynamodb.get_item(TableName=table, Key=key_of(f"missing-{uuid.uuid4().hex}", True))

    for i in range(50):  # caches and allocator arenas settle
        subscribe_and_leave(i)
    before = rss_mib(pid)
    for i in range(300):
        subscribe_and_leave(i)
    # moto alone kept a copy of the table per transaction: 600 of them, about 1 GiB here.
    assert rss_mib(pid) - before < 16


def test_stream_records_read_back_with_every_attribute_as_written(moto_endpoint: str) -> None:
    dynamodb, streams, table, stream_arn = table_with_stream(moto_endpoint, sort_key=False)
    item: dict[str, Any] = {
        "pk": {"S": "job-1"},
        "text": {"S": '日本語 "quoted"\n'},
        "count": {"N": "12.5"},
        "blob": {"B": b"\x00\xff binary"},
        "flags": {"SS": ["a", "b"]},
        "blobs": {"BS": [b"\x01", b"\x02"]},
        "nested": {
            "M": {"list": {"L": [{"BOOL": True}, {"NULL": True}, {"N": "-3"}, {"B": b"\x03"}]}}
        },
    }
    dynamodb.put_item(TableName=table, Item=item)
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "job-1"}},
        UpdateExpression="SET #c = :c",
        ExpressionAttributeNames={"#c": "count"},
        ExpressionAttributeValues={":c": {"N": "13"}},
    )
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    page = streams.get_records(ShardIterator=iterator, Limit=10)
    inserted, modified = page["Records"]
    assert (inserted["eventName"], modified["eventName"]) == ("INSERT", "MODIFY")
    assert inserted["dynamodb"]["NewImage"] == item
    assert modified["dynamodb"]["OldImage"] == item
    assert modified["dynamodb"]["NewImage"] == {**item, "count": {"N": "13"}}
    assert modified["dynamodb"]["Keys"] == {"pk": {"S": "job-1"}}
    written_at = inserted["dynamodb"]["ApproximateCreationDateTime"]
    assert isinstance(written_at, datetime.datetime)
    assert abs(written_at.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()) < 60
    assert int(modified["dynamodb"]["SequenceNumber"]) > int(inserted["dynamodb"]["SequenceNumber"])
    # The next page starts after the last record read.
    assert streams.get_records(ShardIterator=page["NextShardIterator"])["Records"] == []


def test_an_update_that_creates_its_item_is_one_insert_record(moto_endpoint: str) -> None:
    """DynamoDB records an UpdateItem that creates an item as one INSERT of the whole item (moto
    recorded its keys-only placeholder as another INSERT first), alone or in a transaction."""
    dynamodb, streams, table, stream_arn = table_with_stream(moto_endpoint, sort_key=True)
    update: dict[str, Any] = {
        "TableName": table,
        "UpdateExpression": "SET n = :n",
        "ExpressionAttributeValues": {":n": {"N": "1"}},
    }
    dynamodb.update_item(Key=key_of("alone", True), **update)
    in_transaction: Any = {"Update": {"Key": key_of("in-tx", True), **update}}
    dynamodb.transact_write_items(TransactItems=[in_transaction])
    dynamodb.update_item(Key=key_of("alone", True), **update)  # exists now: a MODIFY

    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=100)["Records"]
    seen = [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records]
    assert seen == [("INSERT", "alone"), ("INSERT", "in-tx"), ("MODIFY", "alone")]
    for record in records[:2]:
        assert record["dynamodb"]["NewImage"]["n"] == {"N": "1"}
        assert "OldImage" not in record["dynamodb"]
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers)


def test_projected_reads_return_exactly_the_attributes_named(moto_endpoint: str) -> None:
    """Top-level names (copied alone by the local endpoint) and nested paths and list indexes
    (moto's own projection) through GetItem, BatchGetItem and Query."""
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=True)
    key = key_of("job", True)
    item: dict[str, Any] = {
        **key,
        "count": {"N": "3"},
        "status": {"S": "RUNNING"},
        "tags": {"SS": ["a", "b"]},
        "request": {"M": {"prompt": {"S": "long " * 200}, "max": {"N": "16"}}},
        "log": {"L": [{"S": "first"}, {"S": "second"}]},
    }
    dynamodb.put_item(TableName=table, Item=item)
    names = {"#s": "status"}  # a reserved word, through a placeholder

    got = dynamodb.get_item(
        TableName=table,
        Key=key,
        ProjectionExpression="pk, #s, tags, absent_attribute",
        ExpressionAttributeNames=names,
    )["Item"]
    assert got == {"pk": item["pk"], "status": item["status"], "tags": item["tags"]}
    batch = dynamodb.batch_get_item(
        RequestItems={
            table: {
                "Keys": [key],
                "ProjectionExpression": "pk, #c",
                "ConsistentRead": True,
                "ExpressionAttributeNames": {"#c": "count"},
            }
        }
    )["Responses"][table]
    assert batch == [{"pk": item["pk"], "count": item["count"]}]
    nested = dynamodb.get_item(
        TableName=table,
        Key=key,
        ProjectionExpression="request.#m, log[1]",
        ExpressionAttributeNames={"#m": "max"},
    )["Item"]
    assert nested == {"request": {"M": {"max": {"N": "16"}}}, "log": {"L": [{"S": "second"}]}}
    queried = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ProjectionExpression="sk, #c",
        ExpressionAttributeNames={"#c": "count"},
        ExpressionAttributeValues={":pk": item["pk"]},
    )["Items"]
    assert queried == [{"sk": item["sk"], "count": item["count"]}]
    # The stored item is whole and unchanged by the reads.
    assert dynamodb.get_item(TableName=table, Key=key)["Item"] == item


def test_item_reads_return_every_attribute_type_as_written(moto_endpoint: str) -> None:
    """GetItem, BatchGetItem, Query and Scan answer in DynamoDB's JSON (the local endpoint
    dumps moto's answer directly): every type, binary in base64, read back by botocore."""
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=True)
    key = key_of("typed", True)
    item: dict[str, Any] = {
        **key,
        "text": {"S": '日本語 "quoted"\n'},
        "count": {"N": "12.5"},
        "blob": {"B": b"\x00\xff binary"},
        "flag": {"BOOL": False},
        "none": {"NULL": True},
        "names": {"SS": ["a", "b"]},
        "numbers": {"NS": ["1", "2.5"]},
        "blobs": {"BS": [b"\x01", b"\x02"]},
        "nested": {"M": {"list": {"L": [{"BOOL": True}, {"N": "-3"}, {"B": b"\x03"}]}}},
    }
    dynamodb.put_item(TableName=table, Item=item)

    def normalized(found: dict[str, Any]) -> dict[str, Any]:  # sets come back in any order
        return {
            name: {kind: sorted(v) if kind in ("SS", "NS", "BS") else v for kind, v in av.items()}
            for name, av in found.items()
        }

    expected = normalized(item)
    assert normalized(dynamodb.get_item(TableName=table, Key=key)["Item"]) == expected
    batch = dynamodb.batch_get_item(RequestItems={table: {"Keys": [key]}})
    assert [normalized(i) for i in batch["Responses"][table]] == [expected]
    assert batch["UnprocessedKeys"] == {}
    queried = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": item["pk"]},
        ReturnConsumedCapacity="TOTAL",
    )
    assert [normalized(i) for i in queried["Items"]] == [expected]
    assert (queried["Count"], queried["ConsumedCapacity"]["TableName"]) == (1, table)
    scanned = dynamodb.scan(TableName=table)
    assert [normalized(i) for i in scanned["Items"]] == [expected]
    # A key that is not there: no Item member at all.
    assert "Item" not in dynamodb.get_item(TableName=table, Key=key_of("absent", True))


def test_a_query_reads_its_partition_in_sort_key_order_with_conditions_and_pages(
    moto_endpoint: str,
) -> None:
    """The local endpoint answers a base-table Query from the partition it names (not a sort
    of the whole table): the same items, order, key conditions, filters and pages as DynamoDB,
    and a query of a missing partition creates none."""
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=True)
    for pk in ("job#a", "job#b", "job#c"):
        for sk in ("sub#2", "chunk#1", "sub#1", "head", "sub#3"):
            dynamodb.put_item(
                TableName=table, Item={"pk": {"S": pk}, "sk": {"S": sk}, "of": {"S": pk}}
            )

    def sort_keys(**query: Any) -> list[str]:
        answer = dynamodb.query(TableName=table, ConsistentRead=True, **query)
        assert all(item["pk"]["S"] == "job#b" for item in answer["Items"])
        return [item["sk"]["S"] for item in answer["Items"]]

    values = {":pk": {"S": "job#b"}}
    assert sort_keys(KeyConditionExpression="pk = :pk", ExpressionAttributeValues=values) == [
        "chunk#1",
        "head",
        "sub#1",
        "sub#2",
        "sub#3",
    ]
    subscriptions = {**values, ":sub": {"S": "sub#"}}
    by_prefix = "pk = :pk AND begins_with(sk, :sub)"
    assert sort_keys(KeyConditionExpression=by_prefix, ExpressionAttributeValues=subscriptions) == [
        "sub#1",
        "sub#2",
        "sub#3",
    ]
    assert sort_keys(
        KeyConditionExpression=by_prefix,
        ExpressionAttributeValues=subscriptions,
        ScanIndexForward=False,
    ) == ["sub#3", "sub#2", "sub#1"]
    assert sort_keys(
        KeyConditionExpression="pk = :pk",
        FilterExpression="sk <> :head",
        ExpressionAttributeValues={**values, ":head": {"S": "head"}},
    ) == ["chunk#1", "sub#1", "sub#2", "sub#3"]
    first = dynamodb.query(
        TableName=table,
        KeyConditionExpression=by_prefix,
        ExpressionAttributeValues=subscriptions,
        Limit=2,
    )
    assert [i["sk"]["S"] for i in first["Items"]] == ["sub#1", "sub#2"]
    rest = dynamodb.query(
        TableName=table,
        KeyConditionExpression=by_prefix,
        ExpressionAttributeValues=subscriptions,
        ExclusiveStartKey=first["LastEvaluatedKey"],
    )
    assert [i["sk"]["S"] for i in rest["Items"]] == ["sub#3"]
    missing = {":pk": {"S": "job#missing"}}
    assert sort_keys(KeyConditionExpression="pk = :pk", ExpressionAttributeValues=missing) == []
    assert len(dynamodb.scan(TableName=table)["Items"]) == 15


def test_a_query_of_a_table_without_sort_key_reads_its_one_item(moto_endpoint: str) -> None:
    dynamodb = dynamodb_client(moto_endpoint)
    table = new_table(dynamodb, sort_key=False)
    for pk in ("a", "b", "c"):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "n": {"N": "1"}})
    answer = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "b"}},
    )
    assert answer["Items"] == [{"pk": {"S": "b"}, "n": {"N": "1"}}]
    assert answer["Count"] == 1
    none = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "z"}},
    )
    assert none["Items"] == []
