"""`headrace events tail`: print the bus's Completion events as they happen.

It subscribes as an integrator would: a queue of its own and a rule on the bus that targets it
(both removed when it stops), then prints what arrives. The stack is the running `headrace dev`,
or the deployed one HEADRACE_EVENT_BUS_NAME names (with the caller's AWS credentials).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from typing import Any

from headrace.cli.key_commands import KeyCommandError, key_settings_kwargs

PATTERN = {"detail-type": [{"prefix": "Completion "}]}


def register(commands: argparse._SubParsersAction[Any]) -> None:
    events = commands.add_parser(
        "events",
        help="follow the event bus (headrace events tail)",
        description="The event bus of a stack: the running `headrace dev`, or the deployed one "
        "HEADRACE_EVENT_BUS_NAME names.",
    )
    actions = events.add_subparsers(title="event commands", metavar="COMMAND")
    tail = actions.add_parser(
        "tail",
        help="print Completion events as they happen",
        description="Print every Completion event of the bus (Requested, Rejected, Started, "
        "Succeeded, Failed, Cancelled, Timed Out) as it happens, through a queue and rule of "
        "its own that it removes when it stops. Ctrl-C stops.",
    )
    tail.add_argument("--json", action="store_true", help="print each event whole, one a line")
    tail.add_argument("--count", type=int, default=0, help="stop after this many events")
    tail.add_argument("--timeout", type=float, default=0, help="stop after this many seconds")
    tail.set_defaults(run=_run_tail)
    events.set_defaults(run=lambda args: (events.print_help(sys.stderr), 2)[1])


def _clients() -> tuple[Any, Any, str]:
    from headrace.core.aws import boto3_client
    from headrace.core.settings import Settings

    overrides: dict[str, Any] = {}
    if not os.environ.get("HEADRACE_EVENT_BUS_NAME"):
        from headrace.client.dev_state import read_dev_state

        overrides = key_settings_kwargs(environ={}) or {}
        overrides.pop("table_name", None)
        bus = read_dev_state().get("event_bus_name")
        if bus:
            overrides["event_bus_name"] = bus
        from headrace.dev.moto import MOTO_ENV

        os.environ.update(MOTO_ENV)
    settings = Settings(**overrides)
    events = boto3_client(settings, "events")
    return events, boto3_client(settings, "sqs"), settings.event_bus_name


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_tail(args: argparse.Namespace) -> int:
    # Explicit: a shell may start us with SIGINT ignored (a background job), and a stop by any
    # of these must remove the rule and queue.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        events, sqs, bus = _clients()
    except KeyCommandError as e:
        print(f"headrace: {e}", file=sys.stderr)
        return 1
    name = f"headrace-tail-{secrets.token_hex(4)}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        rule_arn = events.put_rule(
            Name=name, EventBusName=bus, EventPattern=json.dumps(PATTERN), State="ENABLED"
        )["RuleArn"]
        _allow_rule(sqs, queue_url, rule_arn)
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        target = {"Id": "tail", "Arn": queue_arn["Attributes"]["QueueArn"]}
        events.put_targets(Rule=name, EventBusName=bus, Targets=[target])
        print(f"following {bus} (Ctrl-C stops)", file=sys.stderr, flush=True)
        return _follow(sqs, queue_url, args)
    except KeyboardInterrupt:
        return 0
    finally:
        _remove(events, sqs, bus, name, queue_url)


def _allow_rule(sqs: Any, queue_url: str, rule_arn: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": "*",
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def _follow(sqs: Any, queue_url: str, args: argparse.Namespace) -> int:
    printed = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while deadline is None or time.monotonic() < deadline:
        wait = 2 if deadline is None else max(0, min(2, int(deadline - time.monotonic())))
        found = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
        )
        for message in found.get("Messages", []):
            print(_line(json.loads(message["Body"]), whole=args.json), flush=True)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            printed += 1
            if args.count and printed >= args.count:
                return 0
    return 0


def _line(event: dict[str, Any], *, whole: bool) -> str:
    if whole:
        return json.dumps(event, ensure_ascii=False)
    detail = event.get("detail") or {}
    parts = [str(event.get("time", "")), str(event.get("detail-type", ""))]
    for key in ("request_id", "status", "num_completion_tokens", "reason"):
        if detail.get(key) is not None:
            parts.append(f"{key}={detail[key]}")
    if detail.get("metadata"):
        parts.append("metadata=" + json.dumps(detail["metadata"], ensure_ascii=False))
    text = (detail.get("output") or {}).get("text")
    if text is not None:
        parts.append("text=" + json.dumps(text[:80], ensure_ascii=False))
    return "  ".join(parts)


def _remove(events: Any, sqs: Any, bus: str, name: str, queue_url: str) -> None:
    steps: list[tuple[Any, dict[str, Any]]] = [
        (events.remove_targets, {"Rule": name, "EventBusName": bus, "Ids": ["tail"]}),
        (events.delete_rule, {"Name": name, "EventBusName": bus}),
        (sqs.delete_queue, {"QueueUrl": queue_url}),
    ]
    for call, kwargs in steps:
        try:
            call(**kwargs)
        except Exception as e:  # one failed step must not keep the others from running
            print(f"headrace: cleaning up {name}: {e}", file=sys.stderr)
