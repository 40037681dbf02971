"""OpenAI's Batch API with the official `openai` SDK, unchanged, against the local stack: a file
of requests becomes jobs on the batch lane behind the API, request_counts come from the jobs,
and the output file answers every line by custom_id."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from headrace.api import batch_progress
from headrace.api.batches import FanoutMessage
from headrace.api.job_events import Change
from headrace.api.services import build_services
from headrace.core.settings import Settings
from headrace.core.tables import batches as batch_table
from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_ENV
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.lease_support import messages_left, wait_until
from tests.e2e.support import Api

# The fan-out's chunk (the stack keeps the default) and a batch of a chunk and a half: the
# fan-out crosses a chunk's end and ends on a part chunk.
CHUNK_LINES = Settings.model_fields["batch_fanout_chunk_lines"].default
LINES = 150
# 150 tiny jobs through one worker and the stream consumers take seconds on 2 cores.
pytestmark = pytest.mark.timeout(300)
FINAL = {"completed", "failed", "cancelled", "expired"}


def _line(index: int, *, max_tokens: int = 2, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": f"req-{index}",
        "method": "POST",
        "url": "/v1/completions",
        "body": {
            "model": DEV_MODEL_NAME,
            "prompt": f"The river {index}",
            "max_tokens": max_tokens,
            "temperature": 0,
            **body,
        },
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[OpenAI]:
    with OpenAI(base_url=stack.base_url + "/v1", api_key=stack.api_key, max_retries=0) as sdk:
        yield sdk


def _wait(client: OpenAI, batch_id: str, timeout: float = 150.0) -> tuple[Batch, list[int]]:
    """The batch once final, and every `completed` count seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        assert batch.request_counts is not None
        seen.append(batch.request_counts.completed)
        if batch.status in FINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def done_batch(client: OpenAI) -> tuple[Batch, list[int]]:
    lines = [_line(i) for i in range(LINES)]
    uploaded = client.files.create(file=("requests.jsonl", _jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/completions",
        completion_window="24h",
        metadata={"suite": "e2e"},
    )
    assert created.status == "validating" and created.request_counts is not None
    assert created.request_counts.total == LINES
    return _wait(client, created.id)


def test_a_batch_of_150_lines_answers_each_by_custom_id(
    client: OpenAI, api: Api, done_batch: tuple[Batch, list[int]]
) -> None:
    assert CHUNK_LINES < LINES < 2 * CHUNK_LINES
    batch, seen = done_batch
    assert batch.status == "completed" and batch.metadata == {"suite": "e2e"}
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (LINES, 0)
    assert seen == sorted(seen) and any(0 < count < LINES for count in seen), seen
    assert batch.output_file_id and batch.error_file_id is None
    assert batch.completed_at and batch.in_progress_at and batch.finalizing_at
    output = [
        json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(LINES))
    sample = output[7]
    response = sample["response"]
    assert response["status_code"] == 200 and sample["error"] is None
    assert response["body"]["object"] == "text_completion"
    job = api.wait(response["request_id"])  # each line is a job like any other
    assert job["priority"] == "batch"
    assert job["metadata"] == {"batch_id": batch.id, "custom_id": sample["custom_id"]}
    assert job["output"]["text"] == response["body"]["choices"][0]["text"]
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in client.batches.list(limit=100)]


def _stored_batch(stack: LocalStack, aws: AwsClients, batch_id: str) -> dict[str, Any]:
    assert stack.resources is not None
    key = batch_table.batch_key(job_table.hash_api_key(stack.api_key), batch_id)
    item = aws.dynamodb.get_item(TableName=stack.resources.table_name, Key=key)["Item"]
    return cast(dict[str, Any], item)


def test_a_redelivered_fanout_message_makes_no_second_job(
    stack: LocalStack, aws: AwsClients, done_batch: tuple[Batch, list[int]]
) -> None:
    batch, _ = done_batch
    assert stack.resources is not None
    table = stack.resources.table_name
    owner = job_table.hash_api_key(stack.api_key)
    url = aws.sqs.get_queue_url(QueueName=f"{stack.resources.stack_name}-batch-fanout")["QueueUrl"]
    before = _stored_batch(stack, aws, batch.id)
    message = FanoutMessage(owner=owner, batch_id=batch.id).model_dump_json()
    aws.sqs.send_message(QueueUrl=url, MessageBody=message)
    wait_until(lambda: messages_left(aws, url) == 0, 20, "the message taken and handled")
    ids = {batch_table.job_id(batch.id, i) for i in range(LINES + 1)}
    jobs = 0
    for start in range(0, len(ids), 100):
        keys = [job_table.job_key(i) for i in sorted(ids)[start : start + 100]]
        found = aws.dynamodb.batch_get_item(RequestItems={table: {"Keys": keys}})
        jobs += len(found["Responses"][table])
    assert jobs == LINES
    after = _stored_batch(stack, aws, batch.id)
    for name in ("fanned", "completed", "failed", "status"):
        assert after[name] == before[name], name


def test_stream_records_delivered_again_count_nothing(
    stack: LocalStack, aws: AwsClients, done_batch: tuple[Batch, list[int]]
) -> None:
    batch, _ = done_batch
    assert stack.resources is not None
    table = stack.resources.table_name
    keys = [job_table.job_key(batch_table.job_id(batch.id, i)) for i in range(40)]
    found = aws.dynamodb.batch_get_item(RequestItems={table: {"Keys": keys}})["Responses"][table]
    items = [cast(dict[str, dict[str, Any]], item) for item in found]
    # The records of these jobs turning final, as the stream gave them: one run of the batch,
    # counted before, so the run's transaction fails and each job is skipped on its own.
    changes = [
        Change(
            sequence_number=str(n),
            event_name="MODIFY",
            keys={"pk": item["pk"], "sk": item["sk"]},
            new_image=item,
            old_image={**item, "status": {"S": "RUNNING"}},
            created_at=0.0,
        )
        for n, item in enumerate(items)
    ]
    before = _stored_batch(stack, aws, batch.id)
    with pytest.MonkeyPatch.context() as env:
        for name, value in MOTO_ENV.items():
            env.setenv(name, value)
        settings = Settings(
            aws_endpoint_url=stack.aws_endpoint_url,
            region=stack.resources.region,
            table_name=table,
        )
        services = build_services(settings)
        try:
            assert batch_progress.count(services, changes) is None
        finally:
            services.dynamodb.close()
            services.sqs.close()

    after = _stored_batch(stack, aws, batch.id)
    assert len(changes) == 40
    for name in ("completed", "failed", "status"):
        assert after[name] == before[name], name


def test_a_bad_line_is_a_400_naming_it(client: OpenAI) -> None:
    lines = [_line(0), _line(1, max_tokens=0), _line(2)]
    with pytest.raises(openai.BadRequestError, match=r"line 2: body\.max_tokens"):
        client.files.create(file=("bad.jsonl", _jsonl(lines)), purpose="batch")
    twice = [_line(0), _line(0)]
    with pytest.raises(openai.BadRequestError, match="line 2: custom_id"):
        client.files.create(file=("twice.jsonl", _jsonl(twice)), purpose="batch")
    wrong = [{**_line(0), "url": "/v1/embeddings"}]
    with pytest.raises(openai.BadRequestError, match="line 1: url"):
        client.files.create(file=("wrong.jsonl", _jsonl(wrong)), purpose="batch")


def test_a_file_over_the_limit_is_a_413(client: OpenAI) -> None:
    line = json.dumps(_line(0)).encode() + b"\n"
    big = line * (4 * 1024 * 1024 // len(line) + 1)
    with pytest.raises(openai.APIStatusError) as raised:
        client.files.create(file=("big.jsonl", big), purpose="batch")
    assert raised.value.status_code == 413
    assert "exceed the limit" in raised.value.message


def test_another_key_gets_404(
    client: OpenAI, stack: LocalStack, aws: AwsClients, done_batch: tuple[Batch, list[int]]
) -> None:
    batch, _ = done_batch
    other = "hr_" + secrets.token_urlsafe(24)
    assert stack.resources is not None
    aws.dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, other, name="other", now=0.0)
    )
    with OpenAI(base_url=stack.base_url + "/v1", api_key=other, max_retries=0) as theirs:
        with pytest.raises(openai.NotFoundError):
            theirs.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            theirs.batches.cancel(batch.id)
        assert batch.output_file_id is not None
        with pytest.raises(openai.NotFoundError):
            theirs.files.content(batch.output_file_id)
        assert batch.id not in [b.id for b in theirs.batches.list()]


def test_cancel_ends_the_batch_with_what_finished(client: OpenAI) -> None:
    lines = [_line(i, max_tokens=48) for i in range(120)]
    uploaded = client.files.create(file=("long.jsonl", _jsonl(lines)), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h"
    )
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    batch, _ = _wait(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    assert batch.request_counts is not None and batch.request_counts.completed < 120
    assert batch.error_file_id is not None
    errors = client.files.content(batch.error_file_id).text.splitlines()
    ended = [json.loads(line) for line in errors]
    assert {line["error"]["code"] for line in ended} == {"batch_cancelled"}
    assert len(ended) + batch.request_counts.completed == 120
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(created.id)
