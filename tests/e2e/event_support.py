"""What the event tests share: a stack with short retry timings, a tap on the bus (a rule and a
queue of the test's own, as an integrator subscribes), a webhook receiver, the event schemas."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import jsonschema

from headrace.core.tables.jobs import hash_api_key
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import LocalStack, StackOptions
from tests.e2e.support import FAST_PARAMETERS, FAST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
# Webhook retries 0.3 s apart, a signing secret rotated out signs on for 4 s, and a message an
# event function failed comes back after 2 s (the queues' visibility timeout).
EVENT_SETTINGS = {
    "HEADRACE_WEBHOOK_RETRY_DELAYS_SECONDS": "[0.3, 0.3, 0.3, 0.3, 0.3]",
    "HEADRACE_WEBHOOK_CONNECT_TIMEOUT_SECONDS": "2",
    "HEADRACE_WEBHOOK_READ_TIMEOUT_SECONDS": "2",
    "HEADRACE_WEBHOOK_SECRET_ROTATION_SECONDS": "4",
}
EVENT_PARAMETERS = {"IntakeVisibilityTimeoutSeconds": "2"}


def events_stack(home: Path, logs_dir: Path) -> LocalStack:
    stack = LocalStack(
        StackOptions(
            home=home,
            logs_dir=logs_dir,
            gateway_port=0,
            parameters={**FAST_PARAMETERS, **EVENT_PARAMETERS},
            settings_env={**FAST_SETTINGS, **EVENT_SETTINGS},
        )
    )
    stack.start(workers=1)
    return stack


def owner_id(api_key: str) -> str:
    return "hk_" + hash_api_key(api_key)


def clients(stack: LocalStack) -> tuple[Any, Any, Any]:
    """events, sqs and dynamodb clients for the stack's endpoint."""
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    url = stack.aws_endpoint_url
    return tuple(session.client(name, endpoint_url=url) for name in ("events", "sqs", "dynamodb"))  # type: ignore[return-value]


def validate(event: dict[str, Any], schema_name: str) -> None:
    schema = json.loads((ROOT / "events" / f"{schema_name}.schema.json").read_text())
    jsonschema.validate(event, schema, cls=jsonschema.Draft202012Validator)


class BusTap:
    """A rule on the bus forwarding `pattern` to a queue of the test's own."""

    def __init__(self, stack: LocalStack, pattern: dict[str, Any]) -> None:
        assert stack.resources is not None
        self.events, self.sqs, _ = clients(stack)
        self.bus = stack.resources.event_bus_name
        self.name = f"tap-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        self.events.put_rule(
            Name=self.name, EventBusName=self.bus, EventPattern=json.dumps(pattern)
        )
        target = {"Id": "tap", "Arn": arn["Attributes"]["QueueArn"]}
        self.events.put_targets(Rule=self.name, EventBusName=self.bus, Targets=[target])
        self.seen: list[dict[str, Any]] = []

    def collect(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Every event received, until `done(events)` holds (AssertionError after timeout)."""
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            assert time.monotonic() < deadline, f"events so far: {self.seen}"
            found = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in found.get("Messages", []):
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return self.seen

    def close(self) -> None:
        self.events.remove_targets(Rule=self.name, EventBusName=self.bus, Ids=["tap"])
        self.events.delete_rule(Name=self.name, EventBusName=self.bus)
        self.sqs.delete_queue(QueueUrl=self.url)


@contextmanager
def tap(stack: LocalStack, pattern: dict[str, Any]) -> Iterator[BusTap]:
    bus_tap = BusTap(stack, pattern)
    try:
        yield bus_tap
    finally:
        bus_tap.close()


def of_request(request_id: str, detail_type: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(
        e["detail-type"] == detail_type and e["detail"].get("request_id") == request_id
        for e in events
    )


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next scripted status (the
    last one for the rest) and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = (
                        receiver.statuses.pop(0)
                        if len(receiver.statuses) > 1
                        else receiver.statuses[0]
                    )
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answered {status}".encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/headrace?x=1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(statuses: list[int]) -> Iterator[Receiver]:
    running = Receiver(statuses)
    try:
        yield running
    finally:
        running.close()


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll `check` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        time.sleep(0.05)
