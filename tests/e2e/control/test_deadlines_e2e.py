"""Deadlines over the wire: `timeout_seconds` validated and defaulted by the API; a job still in
the queue at its deadline ends TIMED_OUT undecoded (no GPU time); a running one stops like a
cancel, its partial text kept. (Cancel: tests/e2e/control/test_cancel_e2e.py.)"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.control_support import (
    LONG,
    assert_stream_ends_as_the_job,
    cancel,
    logged_end,
    view,
    wait_final,
    wait_streaming,
)
from tests.e2e.lease_support import greedy_text, messages_left, wait_until
from tests.e2e.support import Api

ASYNC = "/v1/llm/completions-async?model_endpoint_name=headrace-tiny"


def seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (0, "timeout_seconds: Input should be greater than 0"),
        (-1.5, "timeout_seconds: Input should be greater than 0"),
        ("5", "timeout_seconds: Input should be a valid number"),
        (86401, "timeout_seconds: 86401 exceeds the limit of 86400"),
    ],
)
def test_a_bad_timeout_is_a_400_naming_the_field(api: Api, value: object, detail: str) -> None:
    status, answer = api.call("POST", ASYNC, {"prompt": "x", "timeout_seconds": value})
    assert (status, answer["detail"]) == (400, detail)


def test_the_deadline_is_the_requests_timeout_else_the_default(api: Api) -> None:
    given = view(api, api.submit({"prompt": "Water", "max_new_tokens": 2, "timeout_seconds": 90}))
    default = view(api, api.submit({"prompt": "Water", "max_new_tokens": 2}))
    assert seconds(given["deadline"]) - seconds(given["created_at"]) == pytest.approx(90, abs=0.01)
    assert seconds(default["deadline"]) - seconds(default["created_at"]) == pytest.approx(
        3600, abs=0.01
    )
    for job in (given, default):
        assert wait_final(api, job["request_id"])["status"] == "SUCCEEDED"


def test_a_job_past_its_deadline_in_the_queue_is_never_decoded(
    api: Api, aws: AwsClients, control_stack: LocalStack
) -> None:
    fillers = [api.submit(LONG) for _ in range(2)]  # the worker holds two jobs, no more
    for request_id in fillers:
        wait_streaming(aws, control_stack, request_id)
    late = api.submit({"prompt": "Water", "max_new_tokens": 8, "timeout_seconds": 0.3})
    deadline = seconds(view(api, late)["deadline"])
    wait_until(lambda: time.time() > deadline, 5, "the deadline")
    assert view(api, late)["status"] == "QUEUED"  # still in the queue at its deadline

    for filler in fillers:
        assert cancel(api, filler)[0] == 202
    job = wait_final(api, late)

    assert job["status"] == "TIMED_OUT"
    assert job["output"] == {"text": "", "num_completion_tokens": 0}
    assert seconds(job["finished_at"]) >= deadline
    assert_stream_ends_as_the_job(aws, control_stack, job)  # its follower is told why
    lines = logged_end(control_stack, late, "job timed out before it was decoded")
    assert "decoding" not in lines
    assert control_stack.resources is not None
    queue = control_stack.resources.queue_url
    wait_until(lambda: messages_left(aws, queue) == 0, 30, "its message deleted")


def test_a_running_job_past_its_deadline_stops_with_its_partial_text(
    api: Api, aws: AwsClients, control_stack: LocalStack, dev_model_dir: Path
) -> None:
    request_id = api.submit({**LONG, "timeout_seconds": 0.5})
    job = wait_final(api, request_id)

    assert job["status"] == "TIMED_OUT"
    tokens = job["output"]["num_completion_tokens"]
    assert 0 < tokens < LONG["max_new_tokens"]
    assert seconds(job["finished_at"]) >= seconds(job["deadline"])
    # What it generated is what an uninterrupted greedy run gives for as many tokens.
    assert job["output"]["text"] == greedy_text(dev_model_dir, LONG["prompt"], tokens)[0]
    assert_stream_ends_as_the_job(aws, control_stack, job)
    lines = logged_end(control_stack, request_id, "job timed out")
    assert "decoding" in lines
    assert "cancel seen; stopping the job" not in lines
