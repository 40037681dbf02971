"""Leases, attempts and the dead-letter queue against the local stack: a job's attempts are
counted by the worker, a live lease costs none, a job out of attempts ends FAILED with the
reason, a retry after every token was streamed ends with exactly them, a follower of a job whose
worker died right after its final write still gets the last events, and no dead-lettered message
leaves its job unfinished.

The lost worker of each test is written into the table as it would have left things (job record,
stream head and chunks): the moment it died at is then exact, not a race with a kill."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.core.contracts import StreamEvent, StreamOutput
from headrace.core.tables import jobs as job_table
from headrace.core.tables import leases as lease_table
from headrace.core.tables import streams as stream_table
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.lease_support import (
    LEASE_PARAMETERS,
    LOST_WORKER,
    Follower,
    assert_one_stream,
    aws_clients,
    greedy_text,
    lease_stack,
    messages,
    messages_left,
    record_job,
    send,
    store_lost_stream,
    stored_events,
    stored_items,
    text_of,
    wait_until,
)
from tests.e2e.support import Api


@pytest.fixture(scope="module")
def stack(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with lease_stack(model_home, tmp_path_factory.mktemp("lease-logs"), workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Api:
    return Api(stack.base_url, stack.api_key)


@pytest.fixture(scope="module")
def aws(stack: LocalStack) -> Iterator[AwsClients]:
    clients = aws_clients(stack)
    yield clients
    clients.close()


@pytest.fixture
def table(stack: LocalStack) -> str:
    assert stack.resources is not None
    return stack.resources.table_name


def queues_drained(aws: AwsClients, stack: LocalStack) -> bool:
    assert stack.resources is not None
    urls = (stack.resources.queue_url, stack.resources.dlq_url)
    return all(messages_left(aws, url) == 0 for url in urls)


@pytest.mark.parametrize("final_event_stored", [True, False])
def test_a_job_whose_worker_died_after_streaming_every_token_ends_with_exactly_them(
    api: Api,
    aws: AwsClients,
    stack: LocalStack,
    table: str,
    dev_model_dir: Path,
    final_event_stored: bool,
) -> None:
    request = {"prompt": "The river", "max_new_tokens": 40, "temperature": 0}
    # The stream a worker stores for this job, uninterrupted.
    uninterrupted = api.wait(api.submit(request))
    items = stored_items(aws, table, uninterrupted["request_id"])
    chunks = [stream_table.StoredChunk.from_item(i) for i in items]
    assert sum(len(c.token_ids) for c in chunks) == 40
    if not final_event_stored:  # every token streamed, but not yet the end
        last = chunks[-1].event
        assert last.output is not None
        output = last.output.model_copy(update={"finished": False, "num_prompt_tokens": None})
        chunks[-1] = stream_table.StoredChunk(
            last.model_copy(update={"output": output}), chunks[-1].token_ids
        )
    # Its worker died right after committing the last chunk, before the result.
    job = record_job(aws, stack, request, attempts=1)
    store_lost_stream(aws, table, job.request_id, chunks, epoch=1)
    send(aws, stack, job)

    retried = api.wait(job.request_id)

    text, tokens = greedy_text(dev_model_dir, "The river", 40)
    assert uninterrupted["output"]["text"] == text and tokens == 40
    assert retried["status"] == "SUCCEEDED", retried
    assert retried["attempts"] == 2
    assert retried["output"] == uninterrupted["output"]
    events = stored_events(aws, table, job.request_id)
    assert_one_stream(events)
    assert text_of(events) == text
    final = events[-1].output
    assert final is not None and final.finished and final.num_completion_tokens == 40
    log = messages(stack.worker_log(0), job.request_id)
    if final_event_stored:  # the stream shows the job ended: nothing to decode
        assert "decoding" not in log and "job ended as its stored stream did" in log
    else:
        assert log.count("decoding") == 1 and "job succeeded" in log
    wait_until(lambda: queues_drained(aws, stack), 20, "the queues to drain")


def test_a_follower_gets_the_last_events_of_a_worker_killed_right_after_its_final_write(
    api: Api, aws: AwsClients, stack: LocalStack, table: str
) -> None:
    # Its worker stored the job's final state (the last flush with the result, one
    # transaction) and died before it posted that flush to the follower or deleted the message.
    job = record_job(aws, stack, {"prompt": "Ended", "max_new_tokens": 3}, attempts=1)
    follower = Follower(stack, job.request_id)
    assert follower.subscribed.wait(30), "the subscribe was never accepted"
    (subscription,) = aws.dynamodb.query(**stream_table.query_subscriptions(table, job.request_id))[
        "Items"
    ]
    aws.dynamodb.update_item(  # the lost worker delivered to it (nothing posted yet)
        **stream_table.attach_subscription(
            table,
            request_id=job.request_id,
            connection_id=subscription["connection_id"]["S"],
            attacher=f"{LOST_WORKER}#1",
        )
    )
    texts = ["t0", "t1", "t2"]
    chunks = [
        stream_table.StoredChunk(
            StreamEvent(
                request_id=None,
                output=StreamOutput(
                    text=text,
                    finished=i == len(texts) - 1,
                    num_prompt_tokens=1 if i == len(texts) - 1 else None,
                    num_completion_tokens=i + 1,
                ),
            ),
            [100 + i],
        )
        for i, text in enumerate(texts)
    ]
    store_lost_stream(aws, table, job.request_id, chunks, epoch=1, ended=True)
    aws.dynamodb.update_item(
        **lease_table.finish_job(
            table,
            request_id=job.request_id,
            worker_id=LOST_WORKER,
            epoch=1,
            now=time.time(),
            output={"text": "".join(texts), "num_prompt_tokens": 1, "num_completion_tokens": 3},
        )
    )
    send(aws, stack, job)

    follower.join(30)

    assert [f["seq"] for f in follower.frames] == [0, 1, 2]
    assert "".join(f["output"]["text"] for f in follower.frames) == "".join(texts)
    assert follower.frames[-1]["output"]["finished"] is True
    wait_until(lambda: queues_drained(aws, stack), 20, "the message to be deleted")
    log = messages(stack.worker_log(0), job.request_id)
    assert "duplicate delivery of a finished job; deleting the message" in log
    assert "decoding" not in log
    _, view = api.call("GET", f"/v1/llm/completions/{job.request_id}")
    assert (view["status"], view["output"]["text"]) == ("SUCCEEDED", "".join(texts))


def test_a_receive_of_a_job_leased_to_a_live_worker_spends_no_attempt(
    api: Api, aws: AwsClients, stack: LocalStack, table: str
) -> None:
    job = record_job(
        aws, stack, {"prompt": "Leased", "max_new_tokens": 8}, attempts=1, worker="w-live"
    )
    alive = threading.Event()
    alive.set()

    def renew() -> None:  # a live worker's heartbeat
        while alive.is_set():
            aws.dynamodb.put_item(
                **lease_table.renew_worker_lease(table, worker_id="w-live", until=time.time() + 3)
            )
            time.sleep(0.5)

    heartbeat = threading.Thread(target=renew, daemon=True)
    heartbeat.start()
    try:
        send(aws, stack, job)
        log = stack.worker_log(0)
        wait_until(
            lambda: messages(log, job.request_id).count("job is leased by another worker") >= 3,
            40,
            "three receives of the leased job",
        )
        _, view = api.call("GET", f"/v1/llm/completions/{job.request_id}")
        assert (view["status"], view["attempts"]) == ("RUNNING", 1)
    finally:
        alive.clear()
        heartbeat.join()

    # Its worker gone, the job is taken over: the attempt that counts is the second.
    done = api.wait(job.request_id, timeout=30)
    assert (done["status"], done["attempts"]) == ("SUCCEEDED", 2), done
    assert "took over a job whose worker was lost" in messages(stack.worker_log(0), job.request_id)
    receives = int(LEASE_PARAMETERS["MaxReceiveCount"])
    assert messages(log, job.request_id).count("job is leased by another worker") < receives


def test_a_job_out_of_attempts_is_failed_with_the_reason_and_its_message_deleted(
    api: Api, aws: AwsClients, stack: LocalStack, table: str
) -> None:
    job = record_job(aws, stack, {"prompt": "Unlucky", "max_new_tokens": 50}, attempts=3)
    partial = [
        stream_table.StoredChunk(
            StreamEvent(
                request_id=None,
                output=StreamOutput(text=f"t{i}", finished=False, num_completion_tokens=i + 1),
            ),
            [100 + i],
        )
        for i in range(2)
    ]
    store_lost_stream(aws, table, job.request_id, partial, epoch=3)
    send(aws, stack, job)

    done = api.wait(job.request_id, timeout=30)

    assert done["status"] == "FAILED", done
    assert done["attempts"] == 3
    assert done["error"] == {
        "message": "gave up after 3 attempts: worker lost",
        "type": "decode_failed",
    }
    events = stored_events(aws, table, job.request_id)
    assert_one_stream(events)
    assert len(events) == 3 and text_of(events) == "t0t1"
    assert events[-1].error is not None
    assert events[-1].error.content.error == "gave up after 3 attempts: worker lost"
    wait_until(lambda: queues_drained(aws, stack), 20, "the message to be deleted")
    assert "decoding" not in messages(stack.worker_log(0), job.request_id)


def test_dead_lettered_messages_leave_no_job_unfinished(
    api: Api, aws: AwsClients, stack: LocalStack, table: str
) -> None:
    resources = stack.resources
    assert resources is not None
    with_attempts_left = record_job(
        aws, stack, {"prompt": "Again", "max_new_tokens": 6}, worker=None
    )
    out_of_attempts = record_job(aws, stack, {"prompt": "Gone", "max_new_tokens": 6}, attempts=3)
    poison = f"not a job {time.time()}"
    send(aws, stack, with_attempts_left, dead_lettered=True)
    send(aws, stack, out_of_attempts, dead_lettered=True)
    aws.sqs.send_message(QueueUrl=resources.dlq_url, MessageBody=poison)

    retried = api.wait(with_attempts_left.request_id, timeout=30)
    given_up = api.wait(out_of_attempts.request_id, timeout=30)

    assert (retried["status"], retried["attempts"]) == ("SUCCEEDED", 1), retried
    item = aws.dynamodb.get_item(**job_table.get_job(table, with_attempts_left.request_id))["Item"]
    assert item["redriven"] == {"N": "1"}
    assert given_up["status"] == "FAILED"
    assert given_up["error"]["message"] == "gave up after 3 attempts: worker lost"
    # The job view says when each message was found in the dead-letter queue.
    for job in (retried, given_up):
        assert job["created_at"] <= job["dead_lettered_at"] <= job["finished_at"], job
    # What is not a job stays for someone to look at; nothing else is left.
    found: list[str] = []

    def poison_found() -> bool:
        answer = aws.sqs.receive_message(
            QueueUrl=resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in answer.get("Messages", []):
            found.append(message["Body"])
            aws.sqs.delete_message(
                QueueUrl=resources.dlq_url, ReceiptHandle=message["ReceiptHandle"]
            )
        return poison in found

    wait_until(poison_found, 20, "the message that is not a job")
    assert found == [poison]
    wait_until(lambda: queues_drained(aws, stack), 20, "the queues to drain")
