"""The EventBridge bus, its policy and rules, and SQS queue policies of template.yaml, created
through boto3 from their properties (as infra/resource_builders.py does for queues and tables).

The local endpoint enforces no resource policy; they are set all the same, so that what the dev
stack holds reads like the deploy (describe_event_bus, get_queue_attributes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from infra.intrinsics import (
    EVENT_BUS,
    EVENT_BUS_POLICY,
    EVENT_RULE,
    QUEUE_POLICY,
    ProvisionError,
    StackResolver,
)
from infra.resource_builders import AwsClients, ResourceBuilder

_RULE_PROPERTIES = {"Name", "Description", "EventBusName", "EventPattern", "State", "Targets"}
_TARGET_PROPERTIES = {"Id", "Arn", "RetryPolicy", "DeadLetterConfig", "Input", "InputPath"}


def _check_known(logical_id: str, props: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(props) - known)
    if unknown:
        raise ProvisionError(
            f"{logical_id}: properties not supported by infra/event_builders.py: "
            + ", ".join(unknown)
        )


def build_event_bus(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(logical_id, props, {"Name"})
    name = str(props["Name"])
    try:
        arn = clients.events.create_event_bus(Name=name)["EventBusArn"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ResourceAlreadyExistsException":
            raise
        arn = clients.events.describe_event_bus(Name=name)["Arn"]
    stack.created(logical_id, name, {"Arn": arn, "Name": name})


def build_rule(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(logical_id, props, _RULE_PROPERTIES)
    name = str(props.get("Name") or f"{stack.stack_name}-{logical_id}")
    bus = str(props.get("EventBusName", "default"))
    request: dict[str, Any] = {
        "Name": name,
        "EventBusName": bus,
        "State": str(props.get("State", "ENABLED")),
        "EventPattern": json.dumps(props["EventPattern"]),
    }
    if "Description" in props:
        request["Description"] = str(props["Description"])
    arn = clients.events.put_rule(**request)["RuleArn"]
    targets = []
    for target in props.get("Targets", []):
        _check_known(f"{logical_id} target", target, _TARGET_PROPERTIES)
        entry = dict(target)
        if "RetryPolicy" in entry:
            entry["RetryPolicy"] = {k: int(v) for k, v in entry["RetryPolicy"].items()}
        targets.append(entry)
    if targets:
        clients.events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
    stack.created(logical_id, name, {"Arn": arn})


def build_event_bus_policy(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    """One statement of the bus's policy, added to (or replacing by its id) what it holds."""
    _check_known(logical_id, props, {"EventBusName", "StatementId", "Statement"})
    bus = str(props["EventBusName"])
    statement_id = str(props["StatementId"])
    current = clients.events.describe_event_bus(Name=bus).get("Policy")
    policy: dict[str, Any] = (
        json.loads(current) if current else {"Version": "2012-10-17", "Statement": []}
    )
    listed: list[dict[str, Any]] = policy["Statement"]
    statements = [s for s in listed if s.get("Sid") != statement_id]
    statements.append({"Sid": statement_id, **props["Statement"]})
    policy["Statement"] = statements
    clients.events.put_permission(EventBusName=bus, Policy=json.dumps(policy))
    stack.created(logical_id, statement_id, {})


def build_queue_policy(
    clients: AwsClients, stack: StackResolver, logical_id: str, props: dict[str, Any]
) -> None:
    _check_known(logical_id, props, {"Queues", "PolicyDocument"})
    document = json.dumps(props["PolicyDocument"])
    for url in props["Queues"]:
        clients.sqs.set_queue_attributes(QueueUrl=str(url), Attributes={"Policy": document})
    stack.created(logical_id, logical_id, {})


EVENT_BUILDERS: Mapping[str, ResourceBuilder] = {
    EVENT_BUS: build_event_bus,
    EVENT_RULE: build_rule,
    EVENT_BUS_POLICY: build_event_bus_policy,
    QUEUE_POLICY: build_queue_policy,
}
