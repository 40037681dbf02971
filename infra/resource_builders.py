"""Queues, tables and buckets of template.yaml created through boto3 from their properties.

Each builder translates the CloudFormation properties it knows into API calls, reuses a resource
that exists and converges its settings to the template, and refuses properties it cannot honour.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import ClientError

from infra.intrinsics import DYNAMODB_TABLE, S3_BUCKET, SQS_QUEUE, ProvisionError, StackResolver

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import (
        PublicAccessBlockConfigurationTypeDef,
        ServerSideEncryptionRuleTypeDef,
        TagTypeDef,
    )
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients provisioning uses, all pointed at the same endpoint and region."""

    sqs: SQSClient
    dynamodb: DynamoDBClient
    s3: S3Client
    events: Any = None  # EventBridge (infra/event_builders.py)

    @classmethod
    def create(
        cls,
        endpoint_url: str | None = None,
        *,
        region_name: str = "us-east-1",
        session: boto3.session.Session | None = None,
    ) -> AwsClients:
        """Clients for `endpoint_url` (None: real AWS) from `session` (default credentials)."""
        session = session or boto3.session.Session(region_name=region_name)
        return cls(
            sqs=session.client("sqs", endpoint_url=endpoint_url, region_name=region_name),
            dynamodb=session.client("dynamodb", endpoint_url=endpoint_url, region_name=region_name),
            s3=session.client("s3", endpoint_url=endpoint_url, region_name=region_name),
            events=session.client("events", endpoint_url=endpoint_url, region_name=region_name),
        )

    def close(self) -> None:
        self.sqs.close()
        self.dynamodb.close()
        self.s3.close()
        if self.events is not None:
            self.events.close()


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _check_known(logical_id: str, props: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(props) - set(known))
    if unknown:
        raise ProvisionError(
            f"{logical_id}: properties not supported by infra/resource_builders.py: "
            + ", ".join(unknown)
        )


def _cfn_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cfn_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _tags(props: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in props.get("Tags", [])]


_SQS_SCALAR_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
_SQS_JSON_ATTRIBUTES = ("RedriveAllowPolicy", "RedrivePolicy")


def _queue_does_not_exist(error: ClientError) -> bool:
    details = error.response.get("Error", {})
    codes = {str(details.get("Code", "")), str(details.get("QueryErrorCode", ""))}
    return bool(codes & {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})


def build_queue(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(
        logical_id, props, {"QueueName", "Tags", *_SQS_SCALAR_ATTRIBUTES, *_SQS_JSON_ATTRIBUTES}
    )
    fifo = _cfn_bool(props.get("FifoQueue", False))
    name = str(
        props.get("QueueName") or f"{stack.stack_name}-{logical_id}{'.fifo' if fifo else ''}"
    )
    attributes: dict[QueueAttributeNameType, str] = {
        cast("QueueAttributeNameType", key): _cfn_string(props[key])
        for key in _SQS_SCALAR_ATTRIBUTES
        if key in props
    }
    for key in _SQS_JSON_ATTRIBUTES:
        if key in props:
            policy = dict(props[key]) if isinstance(props[key], Mapping) else json.loads(props[key])
            if "maxReceiveCount" in policy:
                policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
            attributes[cast("QueueAttributeNameType", key)] = json.dumps(policy)
    tags = {t["Key"]: t["Value"] for t in _tags(props)}

    sqs = clients.sqs
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if not _queue_does_not_exist(error):
            raise
        url = sqs.create_queue(QueueName=name, Attributes=attributes, tags=tags)["QueueUrl"]
    else:
        # Converge: the template (or an override) may have changed since the queue was made.
        mutable: dict[QueueAttributeNameType, str] = {
            k: v for k, v in attributes.items() if k != "FifoQueue"
        }
        if mutable:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        if tags:
            sqs.tag_queue(QueueUrl=url, Tags=tags)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    stack.created(logical_id, url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


_TABLE_CREATE_PROPERTIES = {
    "AttributeDefinitions",
    "BillingMode",
    "DeletionProtectionEnabled",
    "GlobalSecondaryIndexes",
    "KeySchema",
    "LocalSecondaryIndexes",
    "ProvisionedThroughput",
    "TableClass",
}
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")


def _table_request(props: Mapping[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {k: props[k] for k in _TABLE_CREATE_PROPERTIES if k in props}
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if key in request:
            request[key] = [
                {k: index[k] for k in _INDEX_KEYS if k in index} for index in request[key]
            ]
    if "ProvisionedThroughput" in request:
        request["ProvisionedThroughput"] = {
            k: int(v) for k, v in request["ProvisionedThroughput"].items()
        }
    if "DeletionProtectionEnabled" in request:
        request["DeletionProtectionEnabled"] = _cfn_bool(request["DeletionProtectionEnabled"])
    if "StreamSpecification" in props:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        request["SSESpecification"] = {"Enabled": _cfn_bool(sse.get("SSEEnabled", False))} | {
            k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse
        }
    if props.get("Tags"):
        request["Tags"] = _tags(props)
    return request


def _key_schema(schema: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return sorted((str(k["AttributeName"]), str(k["KeyType"])) for k in schema)


def build_table(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(
        logical_id,
        props,
        {
            *_TABLE_CREATE_PROPERTIES,
            "PointInTimeRecoverySpecification",
            "SSESpecification",
            "StreamSpecification",
            "TableName",
            "Tags",
            "TimeToLiveSpecification",
        },
    )
    dynamodb = clients.dynamodb
    name = str(props.get("TableName") or f"{stack.stack_name}-{logical_id}")
    try:
        table = dynamodb.create_table(TableName=name, **_table_request(props))["TableDescription"]
    except ClientError as error:
        if _error_code(error) != "ResourceInUseException":
            raise
        table = dynamodb.describe_table(TableName=name)["Table"]
        if _key_schema(table.get("KeySchema", [])) != _key_schema(props.get("KeySchema", [])):
            raise ProvisionError(
                f"{logical_id}: table {name} exists with another key schema; delete it first"
            ) from None
    dynamodb.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )

    ttl = props.get("TimeToLiveSpecification")
    if ttl is not None:
        wanted_enabled = _cfn_bool(ttl.get("Enabled", False))
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        current_enabled = current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
        attribute = str(ttl.get("AttributeName") or current.get("AttributeName", ""))
        if (current_enabled, current.get("AttributeName")) != (wanted_enabled, attribute) and (
            wanted_enabled or current_enabled
        ):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": attribute, "Enabled": wanted_enabled},
            )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr is not None:
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": _cfn_bool(
                    pitr.get("PointInTimeRecoveryEnabled", False)
                )
            },
        )
    attributes = {"Arn": table["TableArn"]}
    if table.get("LatestStreamArn"):
        attributes["StreamArn"] = table["LatestStreamArn"]
    stack.created(logical_id, name, attributes)


def build_bucket(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(
        logical_id,
        props,
        {
            "BucketEncryption",
            "BucketName",
            "LifecycleConfiguration",
            "PublicAccessBlockConfiguration",
            "Tags",
            "VersioningConfiguration",
        },
    )
    s3 = clients.s3
    name = str(props.get("BucketName") or f"{stack.stack_name}-{logical_id}".lower())
    try:
        if stack.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(
                Bucket=name,
                CreateBucketConfiguration={
                    "LocationConstraint": cast("BucketLocationConstraintType", stack.region)
                },
            )
    except ClientError as error:
        if _error_code(error) != "BucketAlreadyOwnedByYou":
            raise

    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration=cast(
                "PublicAccessBlockConfigurationTypeDef",
                {k: _cfn_bool(v) for k, v in props["PublicAccessBlockConfiguration"].items()},
            ),
        )
    if "BucketEncryption" in props:
        rules: list[ServerSideEncryptionRuleTypeDef] = []
        for rule in props["BucketEncryption"].get("ServerSideEncryptionConfiguration", []):
            api_rule: dict[str, Any] = {}
            if "ServerSideEncryptionByDefault" in rule:
                api_rule["ApplyServerSideEncryptionByDefault"] = rule[
                    "ServerSideEncryptionByDefault"
                ]
            if "BucketKeyEnabled" in rule:
                api_rule["BucketKeyEnabled"] = _cfn_bool(rule["BucketKeyEnabled"])
            rules.append(cast("ServerSideEncryptionRuleTypeDef", api_rule))
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={"Rules": rules},
        )
    if "LifecycleConfiguration" in props:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    _lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]
                ]
            },
        )
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name,
            VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
        )
    if props.get("Tags"):
        tag_set = cast("list[TagTypeDef]", _tags(props))
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_set})
    stack.created(
        logical_id,
        name,
        {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{stack.region}.amazonaws.com",
        },
    )


def _lifecycle_rule(rule: Mapping[str, Any]) -> Any:
    """A CloudFormation lifecycle rule as the S3 API takes it (the forms the template uses)."""
    api_rule: dict[str, Any] = {
        "ID": rule.get("Id", ""),
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        api_rule["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort:
        api_rule["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(abort["DaysAfterInitiation"])
        }
    return api_rule


ResourceBuilder = Callable[[AwsClients, StackResolver, str, dict[str, Any]], None]

# Resource type -> the builder that creates one from its resolved properties.
RESOURCE_BUILDERS: Mapping[str, ResourceBuilder] = {
    SQS_QUEUE: build_queue,
    DYNAMODB_TABLE: build_table,
    S3_BUCKET: build_bucket,
}
