"""infra/provision.py against a real moto server: the template's resources, over the wire."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from headrace.core.settings import Settings
from headrace.dev.moto import (
    MOTO_ACCOUNT_ID,
    MOTO_CREDENTIALS,
    start_moto_server,
    stop_process,
)
from infra.provision import (
    AwsClients,
    ProvisionedResources,
    ProvisionError,
    provision,
    settings_overrides,
)
from infra.template import load_template, resources_of_type


def _clients(endpoint: str, region: str = "us-east-1") -> AwsClients:
    session = boto3.session.Session(region_name=region, **MOTO_CREDENTIALS)
    return AwsClients.create(endpoint, region_name=region, session=session)


@pytest.fixture
def clients(moto_endpoint: str) -> Iterator[AwsClients]:
    made = _clients(moto_endpoint)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def stack_name() -> str:
    """A fresh stack name per test: the moto server is shared by the session."""
    return f"t{uuid.uuid4().hex[:10]}"


def _queue_attributes(clients: AwsClients, url: str) -> dict[str, str]:
    response = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return {str(name): value for name, value in response["Attributes"].items()}


def test_provision_builds_the_template_resources(clients: AwsClients, stack_name: str) -> None:
    resources = provision(clients, stack_name=stack_name)

    assert resources.table_name == f"{stack_name}-jobs"
    assert resources.queue_name == f"{stack_name}-jobs"
    assert resources.dlq_name == f"{stack_name}-jobs-dlq"
    assert resources.bucket_name == f"{stack_name}-models-{MOTO_ACCOUNT_ID}"
    assert resources.account_id == MOTO_ACCOUNT_ID
    assert (resources.visibility_timeout_seconds, resources.max_receive_count) == (60, 5)

    sqs = clients.sqs
    assert sqs.get_queue_url(QueueName=resources.queue_name)["QueueUrl"] == resources.queue_url
    assert sqs.get_queue_url(QueueName=resources.dlq_name)["QueueUrl"] == resources.dlq_url
    queue = _queue_attributes(clients, resources.queue_url)
    dlq = _queue_attributes(clients, resources.dlq_url)
    assert queue["VisibilityTimeout"] == "60"
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    assert queue["MessageRetentionPeriod"] == str(4 * 24 * 3600)
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"] == resources.dlq_arn
    assert int(redrive["maxReceiveCount"]) == 5
    assert dlq["MessageRetentionPeriod"] == str(14 * 24 * 3600)

    table = clients.dynamodb.describe_table(TableName=resources.table_name)["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TableArn"] == resources.table_arn
    ttl = clients.dynamodb.describe_time_to_live(TableName=resources.table_name)
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    backups = clients.dynamodb.describe_continuous_backups(TableName=resources.table_name)
    pitr = backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
    assert pitr["PointInTimeRecoveryStatus"] == "ENABLED"

    s3 = clients.s3
    s3.head_bucket(Bucket=resources.bucket_name)
    block = s3.get_public_access_block(Bucket=resources.bucket_name)
    assert all(block["PublicAccessBlockConfiguration"].values())
    encryption = s3.get_bucket_encryption(Bucket=resources.bucket_name)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_the_queue_really_redrives_to_the_dlq(moto_endpoint: str, stack_name: str) -> None:
    made = _clients(moto_endpoint)
    try:
        resources = provision(
            made,
            stack_name=stack_name,
            overrides={"VisibilityTimeoutSeconds": "1", "MaxReceiveCount": "1"},
        )
        sqs = made.sqs
        sqs.send_message(QueueUrl=resources.queue_url, MessageBody="poison")
        first = sqs.receive_message(QueueUrl=resources.queue_url, WaitTimeSeconds=1)
        assert [m["Body"] for m in first.get("Messages", [])] == ["poison"]
        # Not deleted: once visible again, the next receive moves it to the DLQ.
        moved: list[str] = []
        for _ in range(10):
            sqs.receive_message(QueueUrl=resources.queue_url, WaitTimeSeconds=1)
            dead = sqs.receive_message(QueueUrl=resources.dlq_url, WaitTimeSeconds=0)
            moved = [m["Body"] for m in dead.get("Messages", [])]
            if moved:
                break
        assert moved == ["poison"]
    finally:
        made.close()


def test_provisioning_twice_reuses_the_resources(clients: AwsClients, stack_name: str) -> None:
    first = provision(clients, stack_name=stack_name)
    second = provision(clients, stack_name=stack_name)
    assert first == second
    queues = clients.sqs.list_queues(QueueNamePrefix=stack_name).get("QueueUrls", [])
    lanes = [first.queue_url, first.dlq_url, first.batch_queue_url, first.batch_dlq_url]
    made = [a["QueueUrl"] for a in first.attributes.values() if "QueueUrl" in a]
    assert sorted(queues) == sorted(made) and set(lanes) <= set(made)  # and the event side's
    tables = clients.dynamodb.list_tables()["TableNames"]
    assert [t for t in tables if t.startswith(stack_name)] == [first.table_name]
    buckets = [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]
    batch_files = first.attributes["BatchFilesBucket"]["Ref"]
    assert sorted(b for b in buckets if b.startswith(stack_name)) == sorted(
        [first.bucket_name, batch_files]
    )


def test_overrides_apply_and_a_rerun_converges(clients: AwsClients, stack_name: str) -> None:
    provision(clients, stack_name=stack_name)
    resources = provision(
        clients,
        stack_name=stack_name,
        overrides={"VisibilityTimeoutSeconds": "3", "MaxReceiveCount": "3"},
    )
    assert (resources.visibility_timeout_seconds, resources.max_receive_count) == (3, 3)
    queue = _queue_attributes(clients, resources.queue_url)
    assert queue["VisibilityTimeout"] == "3"
    assert int(json.loads(queue["RedrivePolicy"])["maxReceiveCount"]) == 3


def test_settings_overrides_configure_settings(
    clients: AwsClients, stack_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = provision(
        clients, stack_name=stack_name, overrides={"VisibilityTimeoutSeconds": "7"}
    )
    env = settings_overrides(resources)
    template = load_template()
    template_env = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for function in resources_of_type(template, "AWS::Serverless::Function").values():
        template_env |= set(function["Properties"].get("Environment", {}).get("Variables", {}))
    assert set(env) <= template_env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.table_name == resources.table_name
    assert settings.queue_name == resources.queue_name
    assert settings.dlq_name == resources.dlq_name
    assert settings.models_bucket == resources.bucket_name
    assert settings.visibility_timeout_seconds == 7
    assert settings.max_receive_count == 5
    assert settings.region == "us-east-1"


def test_other_regions_get_a_located_bucket(moto_endpoint: str, stack_name: str) -> None:
    made = _clients(moto_endpoint, region="eu-west-1")
    try:
        resources = provision(made, stack_name=stack_name)
        provision(made, stack_name=stack_name)
        location = made.s3.get_bucket_location(Bucket=resources.bucket_name)
        assert location["LocationConstraint"] == "eu-west-1"
        assert resources.region == "eu-west-1"
        assert ":eu-west-1:" in resources.queue_arn
    finally:
        made.close()


def test_unknown_override_is_an_error(clients: AwsClients, stack_name: str) -> None:
    with pytest.raises(ProvisionError, match="VisibilityTimeout"):
        provision(clients, stack_name=stack_name, overrides={"VisibilityTimeout": "3"})
    with pytest.raises(ProvisionError, match="below"):
        provision(clients, stack_name=stack_name, overrides={"MaxReceiveCount": "0"})
    assert not clients.sqs.list_queues(QueueNamePrefix=stack_name).get("QueueUrls")


def _mini_template(**queue_props: Any) -> dict[str, Any]:
    return {
        "Parameters": {"Suffix": {"Type": "String", "Default": "x"}},
        "Resources": {
            "JobsQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "q"]]},
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": "JobsDeadLetterQueue.Arn"},
                        "maxReceiveCount": "2",
                    },
                    **queue_props,
                },
            },
            "JobsDeadLetterQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": {"Fn::Sub": ["${AWS::StackName}-${S}", {"S": "d"}]},
                    "Tags": [{"Key": "literal", "Value": {"Fn::Sub": "${!Lit}-${Suffix}"}}],
                },
            },
            "JobsTable": {
                "Type": "AWS::DynamoDB::Table",
                "Properties": {
                    "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                    "BillingMode": "PAY_PER_REQUEST",
                },
            },
            "ModelsBucket": {
                "Type": "AWS::S3::Bucket",
                "Properties": {"BucketName": {"Fn::Sub": "${AWS::StackName}-${Suffix}"}},
            },
            "Ignored": {"Type": "AWS::Serverless::Function", "Properties": {}},
        },
    }


def test_intrinsics_resolve_in_dependency_order(clients: AwsClients, stack_name: str) -> None:
    resources = provision(
        clients,
        stack_name=stack_name,
        template=_mini_template(),
        overrides={"Suffix": "m"},
        account_id=MOTO_ACCOUNT_ID,
    )
    assert resources == ProvisionedResources(
        table_name=f"{stack_name}-JobsTable",
        queue_name=f"{stack_name}-q",
        queue_url=resources.queue_url,
        dlq_name=f"{stack_name}-d",
        dlq_url=resources.dlq_url,
        bucket_name=f"{stack_name}-m",
        queue_arn=resources.queue_arn,
        dlq_arn=f"arn:aws:sqs:us-east-1:{MOTO_ACCOUNT_ID}:{stack_name}-d",
        table_arn=resources.table_arn,
        visibility_timeout_seconds=30,
        max_receive_count=2,
        stack_name=stack_name,
        account_id=MOTO_ACCOUNT_ID,
    )
    queue = _queue_attributes(clients, resources.queue_url)
    assert json.loads(queue["RedrivePolicy"])["deadLetterTargetArn"] == resources.dlq_arn
    tags = clients.sqs.list_queue_tags(QueueUrl=resources.dlq_url)["Tags"]
    assert tags == {"literal": "${Lit}-m"}


def test_unsupported_properties_are_refused(clients: AwsClients, stack_name: str) -> None:
    template = _mini_template(FancyNewFeature=True)
    with pytest.raises(ProvisionError, match="FancyNewFeature"):
        provision(clients, stack_name=stack_name, template=template)


def test_moto_server_process_is_stopped(tmp_path: Any) -> None:
    log_file = tmp_path / "moto.log"
    process, url = start_moto_server(log_file=log_file)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert process.poll() is None
    finally:
        stop_process(process)
    assert process.poll() is not None
    assert f"Serving on {url}" in log_file.read_text()  # the server's own output goes there


def test_the_endpoints_retention_check_agrees_with_motos_own() -> None:
    from moto.sqs.models import SQSBackend, sqs_backends

    from headrace.dev.moto_server import _within_retention

    backend = sqs_backends[MOTO_ACCOUNT_ID]["eu-west-3"]
    name = f"retention-{uuid.uuid4().hex[:8]}"
    backend.create_queue(name, MessageRetentionPeriod="60")
    fresh = backend.send_message(name, "fresh")
    stale = backend.send_message(name, "stale")
    stale.sent_timestamp = (stale.sent_timestamp or 0) - 61_000  # type: ignore[assignment]
    original = SQSBackend.is_message_valid_based_on_retention_period
    for message, kept in ((fresh, True), (stale, False)):
        assert original(backend, name, message) is kept
        assert _within_retention(backend, name, message) is kept


def _scratch_table(dynamodb: Any, prefix: str) -> str:
    """A new table keyed by a string `pk`, for one test."""
    table = f"{prefix}-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return table


def test_the_endpoint_parses_an_update_once_and_still_applies_each_calls_values(
    moto_endpoint: str,
) -> None:
    session = boto3.session.Session(region_name="eu-west-3", **MOTO_CREDENTIALS)
    dynamodb = session.client("dynamodb", endpoint_url=moto_endpoint)
    table = _scratch_table(dynamodb, "parse")
    update = "SET #s = :s, n = if_not_exists(n, :zero) + :one"
    for key, status, times in (("a", "one", 1), ("b", "two", 1), ("a", "three", 2)):
        answer = dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": key}},
            UpdateExpression=update,
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":s": {"S": status},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )
        assert answer["Attributes"]["status"] == {"S": status}
        assert answer["Attributes"]["n"] == {"N": str(times)}
    for _ in range(2):  # a broken expression is refused every time, not remembered
        with pytest.raises(dynamodb.exceptions.ClientError, match="ValidationException"):
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": "a"}},
                UpdateExpression="SET = :s",
                ExpressionAttributeValues={":s": {"S": "x"}},
            )


def test_the_endpoint_applies_each_dynamodb_write_whole(moto_endpoint: str) -> None:
    """As DynamoDB does: a conditional write checks and writes as one step, and no read sees
    part of a write (moto's backend changes an item in place, action by action)."""
    session = boto3.session.Session(region_name="eu-west-3", **MOTO_CREDENTIALS)
    dynamodb = session.client(
        "dynamodb", endpoint_url=moto_endpoint, config=Config(max_pool_connections=32)
    )
    table = _scratch_table(dynamodb, "atomic")
    keys = [f"job-{i}" for i in range(10)]
    for key in keys:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "state": {"S": "free"}})
    # Many actions after the one a reader checks, so a write takes a while to apply.
    filler = {f"f{i}": {"S": "x" * 100} for i in range(12)}
    setting = ", ".join(f"#{name} = :{name}" for name in filler)

    def take(key: str, worker: int) -> bool:
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": key}},
                UpdateExpression=f"SET #state = :taken, {setting}, taker = :worker",
                ConditionExpression="#state = :free",
                ExpressionAttributeNames={"#state": "state", **{f"#{n}": n for n in filler}},
                ExpressionAttributeValues={
                    ":taken": {"S": "taken"},
                    ":free": {"S": "free"},
                    ":worker": {"N": str(worker)},
                    **{f":{n}": v for n, v in filler.items()},
                },
            )
        except dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def read(key: str) -> dict[str, Any]:
        item: dict[str, Any] = dynamodb.get_item(TableName=table, Key={"pk": {"S": key}})["Item"]
        return item

    with ThreadPoolExecutor(24) as pool:
        takes = [(key, pool.submit(take, key, w)) for key in keys for w in range(8)]
        reads = [pool.submit(read, key) for key in keys for _ in range(16)]
        taken = {key: sum(f.result() for k, f in takes if k == key) for key in keys}
        seen = [f.result() for f in reads]
    assert taken == {key: 1 for key in keys}  # one winner per item
    half_written = [i for i in seen if i["state"]["S"] == "taken" and "taker" not in i]
    assert half_written == []
