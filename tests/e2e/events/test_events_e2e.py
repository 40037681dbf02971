"""Events in and out over the wire: put_events and the intake queue make jobs (once each, however
often delivered), refused requests become Completion Rejected events, a throttled record is
retried alone, and a job's final event goes out even when its worker dies right after storing
the final state. The handlers are the template's, invoked as Lambda's event source mappings
would (headrace/dev/event_sources.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from headrace.core.events import event_id
from headrace.core.tables import jobs as job_table
from headrace.core.tables import leases
from headrace.core.tables.jobs import JobRecord
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import stop_process
from headrace.dev.stack import LocalStack
from tests.e2e.event_support import clients, of_request, owner_id, tap, validate, wait_for
from tests.e2e.support import Api, log_lines
from tests.e2e.throttle_proxy import ThrottlingProxy

EVERYTHING = {"detail-type": [{"prefix": "Completion "}]}
TAIL = ["events", "tail", "--count", "3", "--timeout", "60"]


def _request(stack: LocalStack, **fields: Any) -> dict[str, Any]:
    return {
        "owner": owner_id(stack.api_key),
        "model": DEV_MODEL_NAME,
        "prompt": "The river",
        "max_new_tokens": 8,
        "temperature": 0,
        **fields,
    }


def _put(stack: LocalStack, detail: dict[str, Any]) -> str:
    assert stack.resources is not None
    events, _, _ = clients(stack)
    entry = {
        "EventBusName": stack.resources.event_bus_name,
        "Source": "my.app",
        "DetailType": "Completion Requested",
        "Detail": json.dumps(detail),
    }
    answer = events.put_events(Entries=[entry])
    assert answer["FailedEntryCount"] == 0, answer
    return str(answer["Entries"][0]["EventId"])


def _intake_drained(stack: LocalStack, url: str | None = None) -> bool:
    assert stack.resources is not None
    _, sqs, _ = clients(stack)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(
        QueueUrl=url or stack.resources.intake_queue_url, AttributeNames=names
    )["Attributes"]
    return all(found[name] == "0" for name in names)


def test_put_events_makes_a_job_whose_events_reach_a_subscribed_queue(
    events_stack: LocalStack,
) -> None:
    stack, request_id = events_stack, str(uuid.uuid4())
    metadata = {"document": "s3://my-bucket/reports/q3.txt", "attempt": 1}
    with tap(stack, EVERYTHING) as bus:
        _put(stack, _request(stack, request_id=request_id, metadata=metadata))
        seen = bus.collect(of_request(request_id, "Completion Succeeded"))
    ours = [
        e for e in seen if e["source"] == "headrace" and e["detail"]["request_id"] == request_id
    ]
    assert [e["detail-type"] for e in ours] == ["Completion Started", "Completion Succeeded"]
    requested = next(e for e in seen if e["detail-type"] == "Completion Requested")
    validate(requested, "completion-requested")
    for event in ours:
        validate(event, "completion-event")
        assert event["source"] == "headrace"
        assert event["detail"]["metadata"] == metadata
        assert event["detail"]["owner"] == owner_id(stack.api_key)
    detail = ours[1]["detail"]
    timings = detail["timings"]
    assert timings["queued_at"] <= timings["started_at"] <= timings["first_token_at"]
    assert timings["first_token_at"] <= timings["finished_at"]
    status, job = Api(stack.base_url, stack.api_key).call(
        "GET", f"/v1/llm/completions/{request_id}"
    )
    assert status == 200 and job["status"] == "SUCCEEDED"
    assert detail["output"] == job["output"] and detail["event_id"] != ours[0]["detail"]["event_id"]
    assert detail["num_completion_tokens"] == job["output"]["num_completion_tokens"]
    assert (job["owner"], job["metadata"]) == (owner_id(stack.api_key), metadata)
    other_key = f"hr-other-{uuid.uuid4().hex}"
    _, _, dynamodb = clients(stack)
    assert stack.resources is not None
    dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, other_key, name="other", now=0)
    )
    other = Api(stack.base_url, other_key).call("GET", f"/v1/llm/completions/{request_id}")
    assert other[0] == 404


def _jobs_marked(stack: LocalStack, marker: str) -> list[str]:
    assert stack.resources is not None
    _, _, dynamodb = clients(stack)
    found = dynamodb.scan(
        TableName=stack.resources.table_name,
        FilterExpression="sk = :job AND contains(#r, :marker)",
        ExpressionAttributeNames={"#r": "request"},
        ExpressionAttributeValues={":job": {"S": "job"}, ":marker": {"S": marker}},
        ConsistentRead=True,
    )
    return sorted(item["request_id"]["S"] for item in found["Items"])


def test_an_event_delivered_twice_makes_one_job(events_stack: LocalStack) -> None:
    stack = events_stack
    assert stack.resources is not None
    _, sqs, _ = clients(stack)
    marker = f"twice-{uuid.uuid4().hex}"
    # EventBridge delivers at least once: the same event (same id) reaches the queue twice.
    envelope = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Completion Requested",
        "source": "my.app",
        "account": "123456789012",
        "time": "2026-12-03T00:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": _request(stack, metadata={"marker": marker}),
    }
    for _ in range(2):
        sqs.send_message(
            QueueUrl=stack.resources.intake_queue_url, MessageBody=json.dumps(envelope)
        )
    # And a sender's own request_id, sent in two events (two EventBridge ids).
    chosen = str(uuid.uuid4())
    for _ in range(2):
        _put(stack, _request(stack, request_id=chosen, metadata={"marker": marker}))
    derived = event_id("intake", envelope["id"])
    api = Api(stack.base_url, stack.api_key)
    for request_id in (derived, chosen):
        assert api.wait(request_id)["status"] == "SUCCEEDED"
    wait_for(lambda: _intake_drained(stack), what="the intake queue drained")
    assert _jobs_marked(stack, marker) == sorted([derived, chosen])
    assert api.wait(derived)["attempts"] == 1


def test_a_batch_with_two_invalid_requests_makes_eight_jobs_and_two_rejections(
    events_stack: LocalStack,
) -> None:
    stack = events_stack
    assert stack.resources is not None
    _, sqs, _ = clients(stack)
    request_ids = [str(uuid.uuid4()) for _ in range(8)]
    bodies = [_request(stack, request_id=r, max_new_tokens=2) for r in request_ids]
    bodies.insert(3, _request(stack, prompt=""))
    bodies.insert(7, _request(stack, owner="hk_" + "0" * 64))
    with tap(stack, {"detail-type": ["Completion Rejected"]}) as bus:
        sent = sqs.send_message_batch(
            QueueUrl=stack.resources.intake_queue_url,
            Entries=[{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies)],
        )
        ids = {int(e["Id"]): e["MessageId"] for e in sent["Successful"]}
        invalid = {ids[3], ids[7]}
        rejected = bus.collect(
            lambda events: {e["detail"]["message_id"] for e in events} >= invalid
        )
    assert len(rejected) == 2
    by_message = {e["detail"]["message_id"]: e["detail"] for e in rejected}
    for event in rejected:
        validate(event, "completion-rejected")
    assert by_message[ids[3]]["reason"].startswith("prompt:")
    assert by_message[ids[3]]["status_code"] == 400
    assert by_message[ids[7]]["reason"].startswith("owner: unknown API key")
    api = Api(stack.base_url, stack.api_key)
    for request_id in request_ids:
        assert api.wait(request_id)["status"] == "SUCCEEDED"
    # Not retried: deleted at once (nothing left in flight), each handed to the function once.
    wait_for(lambda: _intake_drained(stack), what="the intake queue drained")
    invocations = [
        set(line["message_ids"])
        for line in log_lines(stack.logs_dir / "event-sources.log")
        if "message_ids" in line
    ]
    for message_id in invalid:
        assert sum(message_id in batch for batch in invocations) == 1


def _only_intake(resources: dict[str, Any]) -> list[str]:
    # One poller: another would receive the batch again while the first invocation retries
    # (as AWS would with a visibility timeout shorter than the function's run).
    return ["--only", "IntakeMapping", "--concurrency", "1", "--resources", json.dumps(resources)]


def test_a_throttled_record_is_retried_alone(events_stack: LocalStack, tmp_path: Path) -> None:
    """A second intake function, its AWS calls through a proxy that throttles the PutItem of
    one record for all of its first invocation's tries, consuming a queue of this test's."""
    stack = events_stack
    assert stack.resources is not None
    _, sqs, _ = clients(stack)
    queue = sqs.create_queue(QueueName=f"throttled-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    marker = f"throttle-me-{uuid.uuid4().hex[:8]}"
    # Every try of one invocation: botocore's 4 (1 + 3 retries) within each of call_aws's 4.
    proxy = ThrottlingProxy(stack.aws_endpoint_url, marker=marker.encode(), times=16)
    resources = {
        **stack.resources.attributes,
        "IntakeQueue": {"QueueUrl": queue, "Arn": arn["QueueArn"]},
    }
    log = tmp_path / "intake.log"
    request_ids = [str(uuid.uuid4()) for _ in range(3)]
    for index, request_id in enumerate(request_ids):
        prompt = marker if index == 1 else "The river"
        body = _request(stack, request_id=request_id, prompt=prompt, max_new_tokens=2)
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
    with log.open("ab") as output:
        intake = subprocess.Popen(
            [sys.executable, "-m", "headrace.dev.event_sources", *_only_intake(resources)],
            env=stack.env({"HEADRACE_AWS_ENDPOINT_URL": proxy.url}),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        api = Api(stack.base_url, stack.api_key)
        for request_id in request_ids:
            path = f"/v1/llm/completions/{request_id}"
            wait_for(lambda: api.call("GET", path)[0] == 200, timeout=60, what=request_id)  # noqa: B023
        wait_for(lambda: _intake_drained(stack, queue), what="the queue drained")
    finally:
        stop_process(intake)
        proxy.close()
    assert proxy.throttled == 16
    invocations = [line["message_ids"] for line in log_lines(log) if "message_ids" in line]
    throttled_id = next(i for b in invocations if len(b) == 1 for i in b)
    # The first invocation got all three; every later one only the throttled record (more than
    # one only if a slow machine let its visibility lapse during a retry: at least once).
    assert len(invocations) >= 2 and len(invocations[0]) == 3, invocations
    assert throttled_id in invocations[0]
    assert all(later == [throttled_id] for later in invocations[1:]), invocations


def test_the_final_event_goes_out_though_the_worker_dies_after_the_final_write(
    events_stack: LocalStack,
) -> None:
    """The worker is frozen mid-job; its final write is made with its own lease and epoch (as
    the worker makes it); then it is killed: nothing it would do after that write happens."""
    stack = events_stack
    assert stack.resources is not None
    _, _, dynamodb = clients(stack)
    table, request_id = stack.resources.table_name, str(uuid.uuid4())
    worker = stack.workers[0]
    with tap(stack, {"detail-type": ["Completion Succeeded"]}) as bus:
        _put(stack, _request(stack, request_id=request_id, max_new_tokens=4000))

        def running() -> JobRecord | None:
            item = dynamodb.get_item(**job_table.get_job(table, request_id)).get("Item")
            record = JobRecord.from_item(item) if item else None
            return record if record and record.lease_owner else None

        record = wait_for(running, what="the job claimed")
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            output = {"text": "stored, then the worker died", "num_completion_tokens": 5}
            dynamodb.update_item(
                **leases.finish_job(
                    table,
                    request_id=request_id,
                    worker_id=record.lease_owner,
                    epoch=record.epoch,
                    now=time.time(),
                    output=output,
                )
            )
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        seen = bus.collect(of_request(request_id, "Completion Succeeded"))
    assert seen[-1]["detail"]["output"] == output

    def replaced() -> bool:
        stack.replace_dead_workers()  # as `headrace dev` does: the next tests need a worker
        return stack.workers[0].poll() is None

    wait_for(replaced, what="a new worker")


def test_events_tail_prints_the_bus_events_as_they_happen(
    events_stack: LocalStack, tmp_path: Path
) -> None:
    stack, request_id = events_stack, str(uuid.uuid4())
    state = stack.write_state()  # as `headrace dev` records itself, in this test's home
    (tmp_path / state.name).write_text(state.read_text())
    stack.remove_state()
    env = {**os.environ, "HEADRACE_HOME": str(tmp_path)}
    env.pop("HEADRACE_EVENT_BUS_NAME", None)
    tail = subprocess.Popen(
        [sys.executable, "-m", "headrace.cli.main", *TAIL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith("following headrace-events")
        _put(stack, _request(stack, request_id=request_id))
        out, _ = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:  # it failed: stop it (the rule and queue it made go with it)
            tail.terminate()
            tail.wait(timeout=30)
    lines = out.splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "Completion Requested",
        "Completion Started",
        "Completion Succeeded",
    ]
    assert f"request_id={request_id}" in lines[2] and "status=SUCCEEDED" in lines[2]
    assert stack.resources is not None
    events, _, _ = clients(stack)
    rules = events.list_rules(EventBusName=stack.resources.event_bus_name)["Rules"]
    assert not [r for r in rules if r["Name"].startswith("headrace-tail-")]  # removed on exit
