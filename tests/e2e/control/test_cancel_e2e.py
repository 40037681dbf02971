"""Cancel over the wire: a queued job ends at once and is never decoded; a running one leaves
its batch within a decode step of its worker learning of it, the rest of the batch untouched;
a job whose worker died is ended by the next claim; a job has one final state, whatever the
race. Over HTTP, WebSocket, the client and the CLI. (Deadlines:
tests/e2e/control/test_deadlines_e2e.py.)
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headrace import Completion, HeadraceClientError, NotFoundError
from headrace.client import configure
from headrace.core.contracts import JobStatus, StreamEvent, StreamOutput
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.control_support import (
    LONG,
    assert_stream_ends_as_the_job,
    cancel,
    log_messages,
    logged_end,
    table_of,
    view,
    wait_final,
    wait_streaming,
)
from tests.e2e.lease_support import (
    messages_left,
    record_job,
    send,
    store_lost_stream,
    stored_events,
    wait_until,
)
from tests.e2e.support import Api, log_lines
from tests.e2e.test_cli_client import env_for, headrace

MATE = {"prompt": "The mill", "max_new_tokens": 3000, "temperature": 0}


def batches(stack: LocalStack) -> list[list[str]]:
    lines = log_lines(stack.worker_log(0))
    return [line["requests"] for line in lines if line["message"] == "batch started"]


def tokens_logged(stack: LocalStack, request_id: str, message: str) -> int:
    (line,) = [x for x in log_lines(stack.worker_log(0), request_id) if x["message"] == message]
    return int(line["completion_tokens"])


def test_a_running_job_leaves_its_batch_within_a_step_and_its_mate_is_untouched(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    alone = wait_final(api, api.submit(MATE))
    for _ in range(3):  # two jobs submitted together share a batch, but the machine is shared
        long_id, mate_id = api.submit(LONG), api.submit(MATE)
        wait_streaming(aws, stack, long_id)
        if {long_id, mate_id} in [set(b) for b in batches(stack)]:
            break
        for request_id in (long_id, mate_id):
            cancel(api, request_id)
    else:
        pytest.fail("the two jobs never shared a batch")

    status, answer = cancel(api, long_id)
    cancelled, mate = wait_final(api, long_id), wait_final(api, mate_id)

    assert status == 202, answer
    assert answer == {"request_id": long_id, "status": "RUNNING", "cancelling": True}
    assert cancelled["status"] == "CANCELLED" and cancelled["cancel_requested_at"]
    assert 0 < cancelled["output"]["num_completion_tokens"] < LONG["max_new_tokens"]
    assert_stream_ends_as_the_job(aws, stack, cancelled)
    # Learned of at one token count, stopped at the next step (or the one after, if a step was
    # under way when the flag was set): never decoded on.
    logged_end(stack, long_id, "job cancelled")
    learned = tokens_logged(stack, long_id, "cancel seen; stopping the job")
    stopped = tokens_logged(stack, long_id, "job cancelled")
    assert stopped == cancelled["output"]["num_completion_tokens"]
    assert learned < stopped <= learned + 2
    # Its batch mate decoded on after it left, to the text it has alone.
    assert mate["finished_at"] > cancelled["finished_at"]
    assert (mate["status"], mate["output"]) == ("SUCCEEDED", alone["output"])
    assert_stream_ends_as_the_job(aws, stack, mate)


def test_a_queued_job_is_cancelled_at_once_and_never_decoded(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    fillers = [api.submit(LONG) for _ in range(2)]  # the worker holds two jobs, no more
    for request_id in fillers:
        wait_streaming(aws, stack, request_id)

    async def submit_cancel_and_follow() -> tuple[dict[str, Any], tuple[int, Any], list[Any]]:
        async with aiohttp.ClientSession() as session:
            url = stack.base_url.replace("http://", "ws://") + "/ws"
            ws = await session.ws_connect(url, headers={"x-api-key": stack.api_key})
            await ws.send_json({"action": "complete", "model": DEV_MODEL_NAME, "prompt": "Water"})
            ack = await ws.receive_json(timeout=30)
            queued = view(api, ack["request_id"])
            answer = await asyncio.to_thread(cancel, api, ack["request_id"])
            event = await ws.receive_json(timeout=30)  # its followers are told at once
            await ws.close()
            return queued, answer, [ack, event]

    queued, (status, answer), (ack, event) = asyncio.run(submit_cancel_and_follow())
    request_id = ack["request_id"]
    assert queued["status"] == "QUEUED"
    assert status == 200, answer
    assert answer == {"request_id": request_id, "status": "CANCELLED", "cancelling": False}
    assert event["request_id"] == request_id and event["seq"] == 0
    assert event["output"]["finished"] and event["output"]["text"] == ""
    assert event["error"]["status_code"] == 499
    job = view(api, request_id)
    assert job["status"] == "CANCELLED" and job["attempts"] == 0
    assert job["output"] == {"text": "", "num_completion_tokens": 0}

    for filler in fillers:
        assert cancel(api, filler)[0] == 202
    # The worker, free again, receives the message and deletes it: nothing is decoded.
    assert stack.resources is not None
    wait_until(lambda: messages_left(aws, stack.resources.queue_url) == 0, 30, "an empty queue")
    lines = log_messages(stack, request_id)
    assert "duplicate delivery of a finished job; deleting the message" in lines
    assert "decoding" not in lines
    assert not [b for b in batches(stack) if request_id in b]
    assert stored_events(aws, table_of(stack), request_id) == []
    assert view(api, request_id) == job


def test_a_job_whose_worker_died_after_a_cancel_ends_undecoded_at_the_next_claim(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    job = record_job(aws, stack, dict(LONG), attempts=1)  # leased to a worker that is gone
    codec_ids = [[464, 4046], [13, 383]]  # what the lost worker had streamed, in two flushes
    chunks = [
        stream_table.StoredChunk(
            StreamEvent(
                request_id=job.request_id,
                output=StreamOutput(text=f"<{i}>", finished=False, num_completion_tokens=2 * i),
            ),
            ids,
        )
        for i, ids in enumerate(codec_ids, start=1)
    ]
    store_lost_stream(aws, table_of(stack), job.request_id, chunks, epoch=1)
    status, answer = cancel(api, job.request_id)
    assert (status, answer["status"], answer["cancelling"]) == (202, "RUNNING", True)

    send(aws, stack, job)
    ended = wait_final(api, job.request_id)

    assert ended["status"] == "CANCELLED"
    assert ended["output"] == {"text": "<1><2>", "num_completion_tokens": 4}
    assert_stream_ends_as_the_job(aws, stack, ended)
    lines = logged_end(stack, job.request_id, "job cancelled before it was decoded")
    assert "decoding" not in lines


def test_cancelling_a_final_job_answers_409_and_another_keys_job_404(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    done = wait_final(api, api.submit({"prompt": "Water", "max_new_tokens": 3}))
    status, answer = cancel(api, done["request_id"])
    assert status == 409 and "SUCCEEDED" in answer["detail"], answer
    assert view(api, done["request_id"]) == done

    other = "hr-test-other-cancel-key"
    aws.dynamodb.put_item(**job_table.put_api_key(table_of(stack), other, name="other", now=0.0))
    mine = api.submit(dict(LONG))
    assert cancel(Api(stack.base_url, other), mine) == (
        404,
        {"detail": f"request {mine!r} not found"},
    )
    assert cancel(api, "6f1c1f8e-0000-4000-8000-000000000000")[0] == 404
    assert cancel(api, "not-a-request-id")[0] == 404
    assert cancel(api, mine)[0] in (200, 202)
    assert wait_final(api, mine)["status"] == "CANCELLED"


def test_a_cancel_racing_the_end_of_decoding_leaves_one_final_state(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    delays = random.Random(15).choices([i / 1000 for i in range(0, 400, 5)], k=100)

    def race(delay: float) -> tuple[tuple[int, Any], dict[str, Any]]:
        request_id = api.submit({"prompt": "The wheel", "max_new_tokens": 12, "temperature": 0})
        time.sleep(delay)  # the cancel lands anywhere from the queue to past the end
        return cancel(api, request_id), wait_final(api, request_id)

    with ThreadPoolExecutor(4) as pool:
        tries = list(pool.map(race, delays))

    outcomes: dict[tuple[int, str], int] = {}
    for (status, answer), job in tries:
        outcomes[status, job["status"]] = outcomes.get((status, job["status"]), 0) + 1
        if status == 200:  # cancelled in the queue: nothing decoded, nothing streamed
            assert job["status"] == "CANCELLED" and job["attempts"] == 0, job
            assert job["output"] == {"text": "", "num_completion_tokens": 0}
            assert stored_events(aws, table_of(stack), job["request_id"]) == []
            continue
        if status == 409:  # it was final already
            assert job["status"] == "SUCCEEDED" and "SUCCEEDED" in answer["detail"], answer
        else:
            assert status == 202 and answer["cancelling"], answer
            assert job["status"] in ("CANCELLED", "SUCCEEDED"), job
        assert_stream_ends_as_the_job(aws, stack, job)
    print(f"outcomes (answer, final state): {outcomes}")
    # What each job ended as stays: once every message is deleted (after its job's final
    # write), no worker holds one of them, and a late write would have landed.
    assert stack.resources is not None
    wait_until(lambda: messages_left(aws, stack.resources.queue_url) == 0, 30, "an empty queue")
    for _, job in tries:
        assert view(api, job["request_id"]) == job


def test_cancel_over_websocket_on_the_socket_that_streams_the_job(
    api: Api, aws: AwsClients, stack: LocalStack
) -> None:
    async def stream_then_cancel() -> tuple[list[Any], list[Any]]:
        async with aiohttp.ClientSession() as session:
            url = stack.base_url.replace("http://", "ws://") + "/ws"
            ws = await session.ws_connect(url, headers={"x-api-key": stack.api_key})
            await ws.send_json({"action": "complete", "model": DEV_MODEL_NAME, **LONG})
            frames: list[Any] = []
            while len([f for f in frames if "seq" in f]) < 2:
                frames.append(await ws.receive_json(timeout=30))
            request_id = frames[-1]["request_id"]
            await ws.send_json({"action": "cancel", "request_id": request_id})
            while not (frames[-1].get("seq") is not None and frames[-1]["output"]["finished"]):
                frames.append(await ws.receive_json(timeout=30))
            errors = []
            for frame in (
                {"action": "cancel", "request_id": request_id},  # final now
                {"action": "cancel", "request_id": "6f1c1f8e-0000-4000-8000-000000000000"},
                {"action": "cancel"},
            ):
                await ws.send_json(frame)
                errors.append(await ws.receive_json(timeout=30))
            await ws.close()
            return frames, errors

    frames, errors = asyncio.run(stream_then_cancel())
    events = [f for f in frames if "seq" in f]
    request_id = events[0]["request_id"]
    (ack,) = [f for f in frames if f.get("action") == "cancel"]
    assert ack == {
        "type": "accepted",
        "action": "cancel",
        "request_id": request_id,
        "status": "RUNNING",
        "cancelling": True,
    }
    job = view(api, request_id)
    assert job["status"] == "CANCELLED"
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert "".join(e["output"]["text"] for e in events) == job["output"]["text"]
    assert events[-1]["error"]["status_code"] == 499
    assert events[-1]["output"]["num_completion_tokens"] == job["output"]["num_completion_tokens"]
    assert_stream_ends_as_the_job(aws, stack, job)
    assert [e["error"]["status_code"] for e in errors] == [409, 404, 400]
    assert "CANCELLED" in errors[0]["error"]["content"]["error"]
    assert errors[2]["error"]["content"]["error"].startswith("request_id")


def test_cancel_from_the_client_and_the_cli(
    aws: AwsClients, stack: LocalStack, isolated_config: Path
) -> None:
    configure(base_url=stack.base_url, api_key=stack.api_key)
    request_id = Completion.submit(DEV_MODEL_NAME, **LONG)
    wait_streaming(aws, stack, request_id)

    answer = Completion.cancel(request_id)
    assert (answer.status, answer.cancelling) == (JobStatus.RUNNING, True)
    with pytest.raises(HeadraceClientError) as raised:
        Completion.wait(request_id, timeout=60)
    assert raised.value.status_code == 409 and "was cancelled" in raised.value.detail
    job = Completion.get(request_id)
    assert job.status is JobStatus.CANCELLED and job.output and job.output["text"]
    with pytest.raises(NotFoundError):
        asyncio.run(Completion.acancel("6f1c1f8e-0000-4000-8000-000000000000"))

    env = env_for(stack, isolated_config)
    again = headrace("cancel", request_id, env=env)
    assert again.returncode == 1 and again.stdout == ""
    assert "already CANCELLED" in again.stderr and "(HTTP 409)" in again.stderr
    running = Completion.submit(DEV_MODEL_NAME, **LONG)
    wait_streaming(aws, stack, running)
    done = headrace("cancel", running, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "request_id": running,
        "status": "RUNNING",
        "cancelling": True,
    }
    assert wait_final(Api(stack.base_url, stack.api_key), running)["status"] == "CANCELLED"
