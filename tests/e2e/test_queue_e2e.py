"""At-least-once delivery made safe: duplicates, a killed worker, poison messages, lost sends."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from headrace.api import completions
from headrace.api import services as api_services
from headrace.core.contracts import CompletionRequest, JobMessage, JobStatus
from headrace.core.errors import TransientError
from headrace.core.settings import Settings
from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.lease_support import assert_one_stream, aws_clients, stored_events, text_of
from tests.e2e.support import Api, log_lines, make_stack


def messages_left(aws: AwsClients, queue_url: str) -> int:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_same_message_delivered_twice_decodes_once(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    assert stack.resources is not None
    request = {"prompt": "The river", "max_new_tokens": 300, "temperature": 0}
    request_id = api.submit(request)
    copy = JobMessage(
        request_id=request_id,
        owner=job_table.hash_api_key(stack.api_key),
        model=DEV_MODEL_NAME,
        request=CompletionRequest(**request, model=DEV_MODEL_NAME),
        submitted_at=time.time(),
    )
    for _ in range(2):
        aws.sqs.send_message(QueueUrl=stack.resources.queue_url, MessageBody=copy.model_dump_json())

    job = api.wait(request_id)
    wait_until(lambda: messages_left(aws, stack.resources.queue_url) == 0, 30, "queue to drain")

    assert job["status"] == "SUCCEEDED" and job["attempts"] == 1
    assert job == api.wait(request_id)  # the copies changed nothing afterwards
    lines = log_lines(stack.worker_log(0), request_id)
    assert [line["message"] for line in lines].count("decoding") == 1
    assert [line["message"] for line in lines].count("job succeeded") == 1


def test_malformed_message_goes_to_the_dlq_and_the_worker_keeps_serving(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    resources = stack.resources
    assert resources is not None
    poison = "this is not a job " + str(time.time())
    aws.sqs.send_message(QueueUrl=resources.queue_url, MessageBody=poison)

    assert (
        api.wait(api.submit({"prompt": "Still working", "max_new_tokens": 5}))["status"]
        == "SUCCEEDED"
    )

    found: list[str] = []

    def poison_in_dlq() -> bool:
        # Redrive happens when the queue is received from after the last allowed receive.
        messages = aws.sqs.receive_message(
            QueueUrl=resources.dlq_url, WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", [])
        for message in messages:
            aws.sqs.delete_message(
                QueueUrl=resources.dlq_url, ReceiptHandle=message["ReceiptHandle"]
            )
            found.append(message["Body"])
        return poison in found

    wait_until(poison_in_dlq, 30, "the malformed message in the DLQ")
    messages = [line["message"] for line in log_lines(stack.worker_log(0))]
    assert messages.count("malformed job message") == resources.max_receive_count
    assert (
        api.wait(api.submit({"prompt": "And still", "max_new_tokens": 5}))["status"] == "SUCCEEDED"
    )


def test_worker_killed_mid_job_the_job_is_retried_and_completes(
    model_home: Path, tmp_path: Path
) -> None:
    with make_stack(model_home, tmp_path, workers=0) as stack:
        first = stack.start_worker()
        stack.wait_for_worker()
        api = Api(stack.base_url, stack.api_key)
        # Long enough (seconds) that the kill lands mid-decode.
        request_id = api.submit({"prompt": "The river", "max_new_tokens": 2000, "temperature": 0})

        def running() -> bool:
            _, job = api.call("GET", f"/v1/llm/completions/{request_id}")
            assert job["status"] != "SUCCEEDED", "finished before the kill: make the job longer"
            return bool(job["status"] == "RUNNING")

        wait_until(running, 30, "the job to start")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

        stack.start_worker()
        job = api.wait(request_id, timeout=120)
        assert stack.resources is not None
        aws = aws_clients(stack)
        events = stored_events(aws, stack.resources.table_name, request_id)
        aws.close()

        assert job["status"] == "SUCCEEDED", job
        assert job["attempts"] == 2
        assert job["output"]["num_completion_tokens"] == 2000
        retried = log_lines(stack.worker_log(1), request_id)
        decoding = [line for line in retried if line["message"] == "decoding"]
        # Its lease lapsed with its message: the first receive after the kill takes it over.
        assert decoding and decoding[0]["attempt"] == 2 and decoding[0]["receive_count"] == 2
        assert_one_stream(events)
        assert text_of(events) == job["output"]["text"]


def test_failed_enqueue_marks_the_job_failed(stack: LocalStack, aws: AwsClients) -> None:
    assert stack.resources is not None
    settings = Settings(
        aws_endpoint_url=stack.aws_endpoint_url,
        table_name=stack.resources.table_name,
        queue_name="headrace-no-such-queue",
        model_zoo=stack.model_zoo,
    )
    services = api_services.ApiServices(settings=settings, dynamodb=aws.dynamodb, sqs=aws.sqs)
    owner = job_table.hash_api_key(stack.api_key)

    before = time.time()
    with pytest.raises(TransientError, match="marked FAILED"):
        completions.submit(
            services, owner=owner, request=CompletionRequest(prompt="x"), model=DEV_MODEL_NAME
        )

    # The shared stack's table holds many items: every page, the jobs failed from now on.
    pages = aws.dynamodb.get_paginator("scan").paginate(TableName=stack.resources.table_name)
    [item] = [
        item
        for page in pages
        for item in page["Items"]
        if item.get("error")
        and "enqueue_failed" in item["error"]["S"]
        and float(item["created_at"]["N"]) >= before
    ]
    record = job_table.JobRecord.from_item(dict(item))  # type: ignore[arg-type]
    assert record.status is JobStatus.FAILED
    assert record.error is not None and "enqueue failed" in record.error.message
    status_view = completions.get_job(services, owner=owner, request_id=record.request_id)
    assert status_view.status is JobStatus.FAILED


def test_a_message_with_no_record_runs_and_its_claim_writes_the_record(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    assert stack.resources is not None
    request_id = str(uuid.uuid4())
    message = JobMessage(
        request_id=request_id,
        owner=job_table.hash_api_key(stack.api_key),
        model=DEV_MODEL_NAME,
        request=CompletionRequest(prompt="Sent straight to the queue", max_new_tokens=6),
        submitted_at=time.time(),
    )
    aws.sqs.send_message(QueueUrl=stack.resources.queue_url, MessageBody=message.model_dump_json())

    wait_until(
        lambda: api.call("GET", f"/v1/llm/completions/{request_id}")[0] == 200, 30, "the record"
    )
    job = api.wait(request_id)

    assert job["status"] == "SUCCEEDED" and job["attempts"] == 1
    assert job["output"]["num_completion_tokens"] > 0
    messages = [line["message"] for line in log_lines(stack.worker_log(0), request_id)]
    assert messages.count("decoding") == 1
