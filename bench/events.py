"""From put_events to the final event, on the local stack.

`python -m bench.events [--events 50] [--tokens 8]` starts the local stack (one worker, the dev
model) and subscribes a queue of its own to the bus's final events with a rule, as an
integrator would. Then, one at a time, it puts a Completion Requested event (greedy, `--tokens`
new tokens) and waits for that job's final event on its queue. It prints p50/p95 of the whole
way and of its legs, read from the final event's timings (one clock: one machine): the intake
(put_events to the job recorded), the queue (recorded to claimed), decoding (claimed to done)
and the way out (done to the event received: the table's stream, the events function, the
bus's rule, the queue). Results go to bench/out/events-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from bench.streaming import percentile
from headrace.core.tables.jobs import hash_api_key
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import LocalStack, StackOptions

FINAL = [
    "Completion Succeeded",
    "Completion Failed",
    "Completion Cancelled",
    "Completion Timed Out",
]
OUT = Path(__file__).resolve().parent / "out"


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def one_event(stack: LocalStack, events: Any, sqs: Any, queue: str, tokens: int) -> dict[str, Any]:
    assert stack.resources is not None
    request_id = str(uuid.uuid4())
    detail = {
        "owner": "hk_" + hash_api_key(stack.api_key),
        "model": DEV_MODEL_NAME,
        "prompt": "The river runs past the mill",
        "max_new_tokens": tokens,
        "temperature": 0,
        "request_id": request_id,
    }
    entry = {
        "EventBusName": stack.resources.event_bus_name,
        "Source": "bench.events",
        "DetailType": "Completion Requested",
        "Detail": json.dumps(detail),
    }
    put_at = time.time()
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in found.get("Messages", []):
            received_at = time.time()
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            event = json.loads(message["Body"])
            if event["detail"]["request_id"] != request_id:
                continue
            timings = event["detail"]["timings"]
            queued, started = _epoch(timings["queued_at"]), _epoch(timings["started_at"])
            done = _epoch(timings["finished_at"])
            return {
                "status": event["detail"]["status"],
                "total_s": received_at - put_at,
                "intake_s": queued - put_at,
                "queue_s": started - queued,
                "decode_s": done - started,
                "out_s": received_at - done,
            }
    raise RuntimeError(f"no final event for {request_id} within 60 s")


def _subscribe(stack: LocalStack, events: Any, sqs: Any) -> str:
    assert stack.resources is not None
    queue = sqs.create_queue(QueueName="bench-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    bus = stack.resources.event_bus_name
    pattern = {"source": ["headrace"], "detail-type": FINAL}
    events.put_rule(Name="bench-events", EventBusName=bus, EventPattern=json.dumps(pattern))
    target = {"Id": "bench", "Arn": arn["Attributes"]["QueueArn"]}
    events.put_targets(Rule="bench-events", EventBusName=bus, Targets=[target])
    return str(queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args(argv)
    run_dir = OUT / f"events-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = LocalStack(StackOptions(gateway_port=0, logs_dir=run_dir / "logs"))
    stack.start(workers=1)
    try:
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        events = session.client("events", endpoint_url=stack.aws_endpoint_url)
        sqs = session.client("sqs", endpoint_url=stack.aws_endpoint_url)
        queue = _subscribe(stack, events, sqs)
        one_event(stack, events, sqs, queue, args.tokens)  # warm-up, not counted
        samples = [one_event(stack, events, sqs, queue, args.tokens) for _ in range(args.events)]
    finally:
        stack.stop()
    report = {
        leg: {
            "p50_ms": round(statistics.median(s[leg] for s in samples) * 1000, 1),
            "p95_ms": round(percentile([s[leg] for s in samples], 0.95) * 1000, 1),
        }
        for leg in ("total_s", "intake_s", "queue_s", "decode_s", "out_s")
    }
    statuses = sorted({s["status"] for s in samples})
    print(f"{len(samples)} events, {args.tokens} tokens each, statuses {statuses}")
    for leg, figures in report.items():
        name = leg.removesuffix("_s")
        print(f"  {name:<7} p50 {figures['p50_ms']:8.1f} ms   p95 {figures['p95_ms']:8.1f} ms")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({"report": report, "samples": samples}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
