"""Create the SQS queues, DynamoDB table and S3 bucket of template.yaml through boto3.

The dev stack and the tests run this against a local AWS endpoint (moto server), so locally the
resources have exactly the names and settings the deployed stack gets. Each resource is built
from its template definition: intrinsics (!Ref, !Sub, !GetAtt, !Join, !Select, !Split) are
resolved for the stack name, region, account id and parameters (defaults, or `overrides`), and
CloudFormation properties are translated into API calls. Running it again reuses what exists
and converges queue attributes, TTL and bucket settings to the template.

    clients = AwsClients.create("http://127.0.0.1:5000", region_name="us-east-1")
    resources = provision(clients, stack_name="headrace", overrides={"MaxReceiveCount": "3"})
    os.environ.update(settings_overrides(resources))
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import ClientError

from infra.template import load_template

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

# Logical ids of template.yaml that Settings needs.
JOBS_QUEUE = "JobsQueue"
JOBS_DLQ = "JobsDeadLetterQueue"
JOBS_TABLE = "JobsTable"
MODELS_BUCKET = "ModelsBucket"

SQS_QUEUE = "AWS::SQS::Queue"
DYNAMODB_TABLE = "AWS::DynamoDB::Table"
S3_BUCKET = "AWS::S3::Bucket"
# Created in this order when nothing else decides: the account id, if not given, is read from
# the first ARN a queue or table reports, and the bucket name needs it.
PROVISIONED_TYPES = (SQS_QUEUE, DYNAMODB_TABLE, S3_BUCKET)

_NO_VALUE = object()  # AWS::NoValue: drop the property
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class ProvisionError(RuntimeError):
    """The template asks for something this provisioner cannot build, or the endpoint refused."""


@dataclass(frozen=True)
class AwsClients:
    """The boto3 clients provisioning uses, all pointed at the same endpoint and region."""

    sqs: SQSClient
    dynamodb: DynamoDBClient
    s3: S3Client

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
        )

    def close(self) -> None:
        self.sqs.close()
        self.dynamodb.close()
        self.s3.close()


@dataclass(frozen=True)
class ProvisionedResources:
    """Physical names of the resources Settings points at."""

    table_name: str
    queue_name: str
    queue_url: str
    dlq_name: str
    dlq_url: str
    bucket_name: str
    _: KW_ONLY
    queue_arn: str = ""
    dlq_arn: str = ""
    table_arn: str = ""
    visibility_timeout_seconds: int = 60
    max_receive_count: int = 5
    stack_name: str = "headrace"
    region: str = "us-east-1"
    account_id: str = ""


def settings_overrides(resources: ProvisionedResources) -> dict[str, str]:
    """HEADRACE_* environment for Settings, matching the template's function environment."""
    return {
        "HEADRACE_REGION": resources.region,
        "HEADRACE_TABLE_NAME": resources.table_name,
        "HEADRACE_QUEUE_NAME": resources.queue_name,
        "HEADRACE_DLQ_NAME": resources.dlq_name,
        "HEADRACE_MODELS_BUCKET": resources.bucket_name,
        "HEADRACE_VISIBILITY_TIMEOUT_SECONDS": str(resources.visibility_timeout_seconds),
        "HEADRACE_MAX_RECEIVE_COUNT": str(resources.max_receive_count),
    }


def provision(
    clients: AwsClients,
    *,
    stack_name: str = "headrace",
    template: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
    account_id: str | None = None,
) -> ProvisionedResources:
    """Create (or reuse) every queue, table and bucket of `template` (default: template.yaml).

    stack_name: AWS::StackName, the prefix of every name. overrides: parameter values, e.g.
    {"VisibilityTimeoutSeconds": "3"}; an unknown parameter name is an error. account_id:
    AWS::AccountId; None reads it from the ARN of the first queue or table created. The region is
    the clients' region. Other resource types (functions, IAM, ECS) are not provisioned.
    """
    template = load_template() if template is None else template
    region = clients.sqs.meta.region_name
    stack = _Stack(
        template,
        stack_name=stack_name,
        region=region,
        account_id=account_id,
        parameters=_parameter_values(template, overrides or {}),
    )
    builders: dict[str, Callable[[AwsClients, _Stack, str, dict[str, Any]], None]] = {
        SQS_QUEUE: _provision_queue,
        DYNAMODB_TABLE: _provision_table,
        S3_BUCKET: _provision_bucket,
    }
    for logical_id in _creation_order(template):
        resource = template["Resources"][logical_id]
        if "Condition" in resource:
            raise ProvisionError(f"{logical_id}: conditional resources are not supported")
        props = stack.resolve(resource.get("Properties", {}), where=logical_id)
        builders[resource["Type"]](clients, stack, logical_id, props)

    for logical_id in (JOBS_QUEUE, JOBS_DLQ, JOBS_TABLE, MODELS_BUCKET):
        if logical_id not in stack.refs:
            raise ProvisionError(f"template has no provisionable resource {logical_id}")
    queue_props = stack.resolve(
        template["Resources"][JOBS_QUEUE].get("Properties", {}), where=JOBS_QUEUE
    )
    redrive = queue_props.get("RedrivePolicy") or {}
    return ProvisionedResources(
        table_name=stack.refs[JOBS_TABLE],
        queue_name=stack.attrs[JOBS_QUEUE]["QueueName"],
        queue_url=stack.refs[JOBS_QUEUE],
        dlq_name=stack.attrs[JOBS_DLQ]["QueueName"],
        dlq_url=stack.refs[JOBS_DLQ],
        bucket_name=stack.refs[MODELS_BUCKET],
        queue_arn=stack.attrs[JOBS_QUEUE]["Arn"],
        dlq_arn=stack.attrs[JOBS_DLQ]["Arn"],
        table_arn=stack.attrs[JOBS_TABLE]["Arn"],
        visibility_timeout_seconds=int(queue_props.get("VisibilityTimeout", 30)),
        max_receive_count=int(redrive.get("maxReceiveCount", 0)),
        stack_name=stack_name,
        region=region,
        account_id=stack.account_id(),
    )


# --- Resolving intrinsics -----------------------------------------------------------------


def _parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, str]
) -> dict[str, str | list[str]]:
    declared: Mapping[str, Mapping[str, Any]] = template.get("Parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ProvisionError(f"unknown parameters in overrides: {', '.join(unknown)}")
    values: dict[str, str | list[str]] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw = str(overrides[name])
        elif "Default" in spec:
            raw = str(spec["Default"])
        else:
            continue  # an error only if something refers to it
        values[name] = _check_parameter(name, spec, raw)
    return values


def _check_parameter(name: str, spec: Mapping[str, Any], raw: str) -> str | list[str]:
    kind = str(spec.get("Type", "String"))
    allowed = spec.get("AllowedValues")
    if allowed is not None and raw not in [str(a) for a in allowed]:
        raise ProvisionError(f"parameter {name}={raw!r} is not one of {allowed}")
    if kind == "Number":
        try:
            number = float(raw)
        except ValueError:
            raise ProvisionError(f"parameter {name}={raw!r} is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise ProvisionError(f"parameter {name}={raw} is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise ProvisionError(f"parameter {name}={raw} is above {spec['MaxValue']}")
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        return [item.strip() for item in raw.split(",")] if raw else []
    return raw


class _Stack:
    """What intrinsics resolve against: pseudo parameters, parameters, resources built so far."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str,
        region: str,
        account_id: str | None,
        parameters: Mapping[str, str | list[str]],
    ) -> None:
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self._account_id = account_id
        self.parameters = parameters
        self.refs: dict[str, str] = {}  # logical id -> what Ref returns
        self.attrs: dict[str, dict[str, str]] = {}  # logical id -> GetAtt attributes

    def created(self, logical_id: str, ref: str, attrs: Mapping[str, str]) -> None:
        self.refs[logical_id] = ref
        self.attrs[logical_id] = dict(attrs)
        if self._account_id is None:
            self._account_id = _account_from_arn(attrs.get("Arn", ""))

    def account_id(self) -> str:
        if self._account_id is None:
            raise ProvisionError(
                "AWS::AccountId is needed before any queue or table reported an ARN; "
                "pass account_id"
            )
        return self._account_id

    def pseudo(self, name: str) -> Any:
        values: dict[str, Callable[[], Any]] = {
            "AWS::StackName": lambda: self.stack_name,
            "AWS::Region": lambda: self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": lambda: "aws",
            "AWS::URLSuffix": lambda: "amazonaws.com",
            "AWS::NoValue": lambda: _NO_VALUE,
        }
        if name not in values:
            raise ProvisionError(f"unsupported pseudo parameter {name}")
        return values[name]()

    def ref(self, name: str, where: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.get("Parameters", {}):
            raise ProvisionError(f"{where}: parameter {name} has no default; pass it in overrides")
        if name in self.refs:
            return self.refs[name]
        raise ProvisionError(f"{where}: cannot resolve Ref {name} (not provisioned locally)")

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        try:
            return self.attrs[logical_id][attribute]
        except KeyError:
            raise ProvisionError(
                f"{where}: cannot resolve GetAtt {logical_id}.{attribute}"
            ) from None

    def resolve(self, value: Any, *, where: str) -> Any:
        """`value` with every intrinsic replaced by its value; AWS::NoValue entries dropped."""
        if isinstance(value, list):
            items = [self.resolve(item, where=where) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg), where)
            if key.startswith("Fn::"):
                return self._function(key, arg, where)
        resolved = {key: self.resolve(item, where=where) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _function(self, name: str, arg: Any, where: str) -> Any:
        if name == "Fn::GetAtt":
            logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(str(logical_id), str(self.resolve(attribute, where=where)), where)
        if name == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {}, where)
            text, variables = arg
            return self._sub(text, self.resolve(variables, where=where), where)
        if name == "Fn::Join":
            separator, items = arg
            return str(separator).join(str(item) for item in self.resolve(items, where=where))
        if name == "Fn::Select":
            index, items = self.resolve(arg, where=where)
            return items[int(index)]
        if name == "Fn::Split":
            separator, text = self.resolve(arg, where=where)
            return str(text).split(str(separator))
        raise ProvisionError(f"{where}: unsupported intrinsic {name}")

    def _sub(self, text: str, variables: Mapping[str, Any], where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute, where)
            return str(self.ref(name, where))

        return _SUB_VARIABLE.sub(replace, text)


def _account_from_arn(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[4] else None


def _references(value: Any) -> set[str]:
    """Logical ids and parameter names `value` refers to through Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                return {arg}
            if key == "Fn::GetAtt":
                target = arg.split(".", 1)[0] if isinstance(arg, str) else arg[0]
                return {str(target)}
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                names = {m.split(".", 1)[0] for m in _SUB_VARIABLE.findall(text)}
                return (names - set(variables)) | _references(variables)
        for item in value.values():
            found |= _references(item)
    return found


def _creation_order(template: Mapping[str, Any]) -> list[str]:
    """Provisionable resources, each after those it refers to (DependsOn included)."""
    resources: Mapping[str, Mapping[str, Any]] = template.get("Resources", {})
    wanted = {
        logical_id: resource
        for logical_id, resource in resources.items()
        if resource.get("Type") in PROVISIONED_TYPES
    }
    depends: dict[str, set[str]] = {}
    for logical_id, resource in wanted.items():
        explicit = resource.get("DependsOn", [])
        explicit = [explicit] if isinstance(explicit, str) else explicit
        depends[logical_id] = (_references(resource.get("Properties", {})) | set(explicit)) & set(
            wanted
        )

    def rank(logical_id: str) -> tuple[int, str]:
        return PROVISIONED_TYPES.index(wanted[logical_id]["Type"]), logical_id

    order: list[str] = []
    pending = dict(depends)
    while pending:
        ready = sorted((lid for lid, deps in pending.items() if deps <= set(order)), key=rank)
        if not ready:
            raise ProvisionError(f"circular references among {sorted(pending)}")
        order.append(ready[0])
        del pending[ready[0]]
    return order


# --- Translating properties into API calls ------------------------------------------------


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _check_known(logical_id: str, props: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(props) - set(known))
    if unknown:
        raise ProvisionError(
            f"{logical_id}: properties not supported by infra/provision.py: {', '.join(unknown)}"
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


def _provision_queue(
    clients: AwsClients, stack: _Stack, logical_id: str, props: dict[str, Any]
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


def _provision_table(
    clients: AwsClients, stack: _Stack, logical_id: str, props: dict[str, Any]
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
    stack.created(logical_id, name, {"Arn": table["TableArn"]})


def _provision_bucket(
    clients: AwsClients, stack: _Stack, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(
        logical_id,
        props,
        {
            "BucketEncryption",
            "BucketName",
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


# --- Command line -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m infra.provision --endpoint-url URL`: provision, print HEADRACE_* as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--endpoint-url", help="AWS endpoint, e.g. a moto server; default: AWS")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--stack-name", default="headrace")
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter override (repeatable)",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.parameter)
    clients = AwsClients.create(args.endpoint_url, region_name=args.region)
    try:
        resources = provision(clients, stack_name=args.stack_name, overrides=overrides)
    finally:
        clients.close()
    print(json.dumps(settings_overrides(resources), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
