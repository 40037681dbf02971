"""Workers lost for real: a worker frozen past its lease (SIGSTOP) and woken after another took
its job over writes nothing more of it; a worker killed on a job's last attempt leaves the job
FAILED with the reason, not RUNNING forever."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from headrace.core.tables import streams as stream_table
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.lease_support import (
    Follower,
    assert_one_stream,
    aws_clients,
    decoding_job,
    greedy_text,
    lease_stack,
    messages,
    messages_left,
    stored_events,
    stored_items,
    text_of,
    wait_until,
)
from tests.e2e.support import Api

LOST = "this worker writes nothing more of the job"


def noted_seq(aws: AwsClients, table: str, request_id: str) -> int:
    """The last seq noted as posted to the job's one subscription (-1: none yet)."""
    items: list[Any] = aws.dynamodb.query(**stream_table.query_subscriptions(table, request_id))[
        "Items"
    ]
    return max((stream_table.Subscription.from_item(i).delivered_seq for i in items), default=-1)


def test_a_zombie_worker_writes_nothing_after_the_new_owner_claims(
    model_home: Path, tmp_path: Path, dev_model_dir: Path
) -> None:
    # The longest job the dev model's context takes: its tokens come slower as it grows, and
    # the freeze waits for the note of what was posted to the follower (written 2 s after the
    # first post at the earliest).
    prompt, max_new_tokens = "The river", 4000
    # New subscribers are found within 0.2 s, so the follower is followed before the freeze.
    settings = {"HEADRACE_SUBSCRIBER_CHECK_MS": "200"}
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        lease_stack(model_home, tmp_path, workers=0, settings=settings) as stack,
    ):
        done, items, head, follower, greedy = _zombie_run(
            stack, pool, dev_model_dir, prompt, max_new_tokens
        )
    text, tokens = greedy.result()

    assert done["status"] == "SUCCEEDED", done
    assert done["attempts"] == 2
    assert done["output"]["text"] == text
    assert done["output"]["num_completion_tokens"] == tokens == max_new_tokens
    # What is stored: the frozen worker's chunks, then only the new owner's; one stream.
    epochs = [int(i["epoch"]["N"]) for i in items]
    first_of_new = epochs.index(2)
    assert first_of_new >= 3 and epochs == [1] * first_of_new + [2] * (len(epochs) - first_of_new)
    assert head["epoch"]["N"] == "2"
    events = [stream_table.StoredChunk.from_item(i).event for i in items]
    assert_one_stream(events)
    assert text_of(events) == text
    # What the follower got: every seq once or as the same copy, one text.
    by_seq: dict[int, set[str]] = {}
    for frame in follower.frames:
        by_seq.setdefault(int(frame["seq"]), set()).add(json.dumps(frame, sort_keys=True))
    assert sorted(by_seq) == list(range(len(events)))
    assert all(len(copies) == 1 for copies in by_seq.values())
    # The new owner resumed the follower after the last seq noted as posted to it (noted at the
    # first post, before the freeze), not from the start.
    assert [f["seq"] for f in follower.frames].count(0) == 1
    delivered = [json.loads(next(iter(by_seq[s]))) for s in sorted(by_seq)]
    assert "".join(f["output"]["text"] for f in delivered) == text
    woken = messages(stack.worker_log(0), done["request_id"])
    assert "job succeeded" not in woken


def _zombie_run(
    stack: LocalStack, pool: Executor, model_dir: Path, prompt: str, max_new_tokens: int
) -> tuple[dict[str, Any], list[Any], dict[str, Any], Follower, Future[tuple[str, int]]]:
    """The zombie test's run: its job as it ended, its stored chunks and head, its follower, and
    what the engine itself gives for it (worked out from the freeze on)."""
    assert stack.resources is not None
    table = stack.resources.table_name
    aws = aws_clients(stack)
    api = Api(stack.base_url, stack.api_key)
    zombie, request_id = decoding_job(stack, aws, api, prompt, max_new_tokens)
    # The new owner starts now, the job leased to the zombie: it takes the job over once the
    # frozen one's lease lapses, not once it has loaded its model as well.
    stack.start_worker()
    follower = Follower(stack, request_id)
    wait_until(lambda: follower.frames, 30, "the worker to post to the follower")
    # The note of what was posted to it is written after the post; on a loaded machine it
    # can land a while later, and the freeze must come after it for the resume asserted below.
    wait_until(lambda: noted_seq(aws, table, request_id) >= 0, 30, "the delivery note")
    wait_until(lambda: len(stored_items(aws, table, request_id)) >= 3, 60, "more chunks")

    os.kill(zombie.pid, signal.SIGSTOP)
    try:
        _, frozen = api.call("GET", f"/v1/llm/completions/{request_id}")
        assert frozen["status"] == "RUNNING", "finished before the freeze: make it longer"
        # The engine's own text, worked out on the core the decoding leaves free (CTranslate2
        # lets go of the GIL) while the frozen worker's lease runs out and the job goes on.
        greedy = pool.submit(greedy_text, model_dir, prompt, max_new_tokens)
        wait_until(
            lambda: "decoding" in messages(stack.worker_log(1), request_id), 90, "a takeover"
        )
        wait_until(
            lambda: any(i["epoch"]["N"] == "2" for i in stored_items(aws, table, request_id)),
            60,
            "the new owner's first chunk",
        )
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    wait_until(
        lambda: any(LOST in m for m in messages(stack.worker_log(0), request_id)),
        60,
        "the woken worker to find its job taken",
    )
    done = api.wait(request_id, timeout=240)
    follower.join(60)
    time.sleep(1)  # anything the woken worker still had in flight lands now
    items = stored_items(aws, table, request_id)
    head = aws.dynamodb.get_item(**stream_table.get_stream_head(table, request_id))["Item"]
    aws.close()
    return done, items, head, follower, greedy


def test_a_worker_lost_on_the_last_attempt_leaves_the_job_failed_with_the_reason(
    model_home: Path, tmp_path: Path
) -> None:
    with lease_stack(
        model_home, tmp_path, workers=0, settings={"HEADRACE_MAX_ATTEMPTS": "1"}
    ) as stack:
        assert stack.resources is not None
        resources = stack.resources
        aws = aws_clients(stack)
        api = Api(stack.base_url, stack.api_key)
        first, request_id = decoding_job(stack, aws, api, "The river", 4000)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        _, killed = api.call("GET", f"/v1/llm/completions/{request_id}")
        assert killed["status"] == "RUNNING", "finished before the kill: make it longer"
        stack.start_worker()

        done = api.wait(request_id, timeout=60)
        events = stored_events(aws, resources.table_name, request_id)
        wait_until(
            lambda: messages_left(aws, resources.queue_url) == 0, 20, "the message to be deleted"
        )
        dead_lettered = messages_left(aws, resources.dlq_url)
        aws.close()

    assert done["status"] == "FAILED", done
    assert done["attempts"] == 1
    assert done["error"] == {
        "message": "gave up after 1 attempt: worker lost",
        "type": "decode_failed",
    }
    assert_one_stream(events)
    assert (
        events[-1].error is not None and "gave up after 1 attempt" in events[-1].error.content.error
    )
    assert dead_lettered == 0
