"""The event source mappings of template.yaml (AWS::Lambda::EventSourceMapping): which function
an SQS queue or a DynamoDB stream invokes, and how. The dev stack plays them (nothing in the
local AWS endpoint invokes a function), from these very definitions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from infra.template import resources_of_type

EVENT_SOURCE_MAPPING = "AWS::Lambda::EventSourceMapping"


@dataclass(frozen=True)
class EventSourceMapping:
    logical_id: str
    function_logical_id: str
    handler: str  # "handlers.intake.handler"
    timeout_seconds: float
    source: Literal["sqs", "dynamodb"]
    source_logical_id: str  # the queue, or the table whose stream it reads
    batch_size: int
    batching_window_seconds: float
    report_batch_item_failures: bool
    # EventBridge-style patterns (a record is passed on if one matches; none: all are).
    filters: tuple[dict[str, Any], ...]
    max_concurrency: int  # SQS: concurrent invocations (ScalingConfig); a stream: one at a time
    starting_position: str  # a stream: TRIM_HORIZON or LATEST


def _source(arn: Any, where: str) -> tuple[Literal["sqs", "dynamodb"], str]:
    target = arn.get("Fn::GetAtt") if isinstance(arn, dict) else None
    if isinstance(target, str):
        target = target.split(".", 1)
    if isinstance(target, list) and len(target) == 2:
        if target[1] == "Arn":
            return "sqs", str(target[0])
        if target[1] == "StreamArn":
            return "dynamodb", str(target[0])
    raise ValueError(f"{where}: EventSourceArn must be !GetAtt Queue.Arn or Table.StreamArn")


def event_source_mappings(template: dict[str, Any]) -> list[EventSourceMapping]:
    functions = resources_of_type(template, "AWS::Serverless::Function")
    globals_function = template.get("Globals", {}).get("Function", {})
    mappings: list[EventSourceMapping] = []
    for logical_id, resource in resources_of_type(template, EVENT_SOURCE_MAPPING).items():
        props = resource.get("Properties", {})
        name = props.get("FunctionName")
        function_id = name.get("Ref") if isinstance(name, dict) else None
        if function_id not in functions:
            raise ValueError(f"{logical_id}: FunctionName must be !Ref of a serverless function")
        function = functions[function_id].get("Properties", {})
        source, source_id = _source(props.get("EventSourceArn"), logical_id)
        filters = props.get("FilterCriteria", {}).get("Filters", [])
        mappings.append(
            EventSourceMapping(
                logical_id=logical_id,
                function_logical_id=function_id,
                handler=str(function["Handler"]),
                timeout_seconds=float(function.get("Timeout", globals_function.get("Timeout", 3))),
                source=source,
                source_logical_id=source_id,
                batch_size=int(props.get("BatchSize", 10 if source == "sqs" else 100)),
                batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
                filters=tuple(json.loads(f["Pattern"]) for f in filters),
                max_concurrency=int(props.get("ScalingConfig", {}).get("MaximumConcurrency", 2))
                if source == "sqs"
                else 1,
                starting_position=str(props.get("StartingPosition", "LATEST")),
            )
        )
    return mappings


def matches(pattern: Any, value: Any) -> bool:
    """Whether `value` (a record, or part of it) matches an event filter pattern: each key of
    the pattern present with one of its listed values (exact values only, as the template's)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            matches(sub, value.get(key)) for key, sub in pattern.items()
        )
    if isinstance(pattern, list):
        return value in pattern
    return bool(pattern == value)
