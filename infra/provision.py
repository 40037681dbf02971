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
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from infra.event_builders import EVENT_BUILDERS
from infra.intrinsics import ProvisionError, StackResolver, creation_order, parameter_values
from infra.resource_builders import RESOURCE_BUILDERS, AwsClients
from infra.template import load_template

# Resource type -> the builder that creates one from its resolved properties.
BUILDERS = {**RESOURCE_BUILDERS, **EVENT_BUILDERS}

__all__ = [
    "AwsClients",
    "ProvisionError",
    "ProvisionedResources",
    "main",
    "provision",
    "settings_overrides",
]

# Logical ids of template.yaml that Settings needs.
JOBS_QUEUE = "JobsQueue"
JOBS_DLQ = "JobsDeadLetterQueue"
BATCH_QUEUE = "BatchJobsQueue"
BATCH_DLQ = "BatchJobsDeadLetterQueue"
JOBS_TABLE = "JobsTable"
MODELS_BUCKET = "ModelsBucket"
EVENT_BUS = "EventBus"
INTAKE_QUEUE = "IntakeQueue"
WEBHOOK_QUEUE = "WebhookQueue"
BATCH_FILES_BUCKET = "BatchFilesBucket"
BATCH_FANOUT_QUEUE = "BatchFanoutQueue"


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
    batch_queue_name: str = ""  # the batch lane's queues ("": the template has none)
    batch_queue_url: str = ""
    batch_dlq_name: str = ""
    batch_dlq_url: str = ""
    queue_arn: str = ""
    dlq_arn: str = ""
    table_arn: str = ""
    visibility_timeout_seconds: int = 60
    max_receive_count: int = 5
    stack_name: str = "headrace"
    region: str = "us-east-1"
    account_id: str = ""
    # The event side ("": the template has none).
    event_bus_name: str = ""
    intake_queue_name: str = ""
    intake_queue_url: str = ""
    webhook_queue_name: str = ""
    table_stream_arn: str = ""
    # Every resource built: logical id -> its attributes (Arn, QueueUrl, StreamArn, ...).
    attributes: dict[str, dict[str, str]] = field(default_factory=dict, compare=False)


def settings_overrides(resources: ProvisionedResources) -> dict[str, str]:
    """HEADRACE_* environment for Settings, matching the template's function environment."""
    lanes = {
        "HEADRACE_BATCH_QUEUE_NAME": resources.batch_queue_name,
        "HEADRACE_BATCH_DLQ_NAME": resources.batch_dlq_name,
        "HEADRACE_EVENT_BUS_NAME": resources.event_bus_name,
        "HEADRACE_WEBHOOK_QUEUE_NAME": resources.webhook_queue_name,
    }
    batch_files = resources.attributes.get(BATCH_FILES_BUCKET, {})
    fanout = resources.attributes.get(BATCH_FANOUT_QUEUE, {})
    lanes["HEADRACE_BATCH_FILES_BUCKET"] = batch_files.get("Ref", "")
    lanes["HEADRACE_BATCH_FANOUT_QUEUE_NAME"] = fanout.get("QueueName", "")
    return {
        **{name: value for name, value in lanes.items() if value},
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
    stack = StackResolver(
        template,
        stack_name=stack_name,
        region=region,
        account_id=account_id,
        parameters=parameter_values(template, overrides or {}),
    )
    for logical_id in creation_order(template):
        resource = template["Resources"][logical_id]
        if "Condition" in resource:
            raise ProvisionError(f"{logical_id}: conditional resources are not supported")
        props = stack.resolve(resource.get("Properties", {}), where=logical_id)
        BUILDERS[resource["Type"]](clients, stack, logical_id, props)

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
        batch_queue_name=stack.attrs.get(BATCH_QUEUE, {}).get("QueueName", ""),
        batch_queue_url=stack.refs.get(BATCH_QUEUE, ""),
        batch_dlq_name=stack.attrs.get(BATCH_DLQ, {}).get("QueueName", ""),
        batch_dlq_url=stack.refs.get(BATCH_DLQ, ""),
        queue_arn=stack.attrs[JOBS_QUEUE]["Arn"],
        dlq_arn=stack.attrs[JOBS_DLQ]["Arn"],
        table_arn=stack.attrs[JOBS_TABLE]["Arn"],
        visibility_timeout_seconds=int(queue_props.get("VisibilityTimeout", 30)),
        max_receive_count=int(redrive.get("maxReceiveCount", 0)),
        stack_name=stack_name,
        region=region,
        account_id=stack.account_id(),
        event_bus_name=stack.refs.get(EVENT_BUS, ""),
        intake_queue_name=stack.attrs.get(INTAKE_QUEUE, {}).get("QueueName", ""),
        intake_queue_url=stack.refs.get(INTAKE_QUEUE, ""),
        webhook_queue_name=stack.attrs.get(WEBHOOK_QUEUE, {}).get("QueueName", ""),
        table_stream_arn=stack.attrs[JOBS_TABLE].get("StreamArn", ""),
        attributes={lid: {"Ref": stack.refs[lid], **attrs} for lid, attrs in stack.attrs.items()},
    )


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
