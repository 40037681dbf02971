"""What the job-control tests share: a stack whose worker learns of cancels every 50 ms and
holds two jobs at most (so a third waits in the queue), and readers of what a job left."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from headrace.dev.stack import LocalStack, StackOptions
from infra.provision import AwsClients
from tests.e2e.lease_support import messages, stored_events, text_of, wait_until
from tests.e2e.support import FAST_PARAMETERS, FAST_SETTINGS, Api

CONTROL_SETTINGS = {
    **FAST_SETTINGS,
    "HEADRACE_SUBSCRIBER_CHECK_MS": "400",
    "HEADRACE_CANCEL_CHECK_MS": "50",
    # One replica, batches of two, and no more held: two long jobs fill the worker, so a third
    # waits in the queue; two jobs submitted together share a batch.
    "HEADRACE_INTER_THREADS": "1",
    "HEADRACE_MAX_BATCH_SIZE": "2",
    "HEADRACE_PREFETCH_PER_REPLICA": "1",
    "HEADRACE_MAX_BATCH_WAIT_MS": "150",
}
# Thousands of tokens: seconds of decoding on the dev model, cut short by every test.
LONG: dict[str, Any] = {"prompt": "The river", "max_new_tokens": 4000, "temperature": 0}
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


def control_stack(home: Path, logs_dir: Path) -> LocalStack:
    stack = LocalStack(
        StackOptions(
            home=home,
            logs_dir=logs_dir,
            gateway_port=0,
            parameters=dict(FAST_PARAMETERS),
            settings_env=dict(CONTROL_SETTINGS),
        )
    )
    stack.start(workers=1)
    return stack


def table_of(stack: LocalStack) -> str:
    assert stack.resources is not None
    return stack.resources.table_name


def cancel(api: Api, request_id: str) -> tuple[int, Any]:
    return api.call("POST", f"/v1/llm/completions/{request_id}/cancel")


def view(api: Api, request_id: str) -> dict[str, Any]:
    status, job = api.call("GET", f"/v1/llm/completions/{request_id}")
    assert status == 200, job
    return dict(job)


def wait_final(api: Api, request_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := view(api, request_id))["status"] not in FINAL:
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s"
        time.sleep(0.02)
    return job


def wait_streaming(aws: AwsClients, stack: LocalStack, request_id: str) -> None:
    """Until the job has stored its first event: it is decoding."""
    table = table_of(stack)
    wait_until(lambda: stored_events(aws, table, request_id), 30, "the job's first event")


def log_messages(stack: LocalStack, request_id: str) -> list[str]:
    return messages(stack.worker_log(0), request_id)


def logged_end(stack: LocalStack, request_id: str, ended: str) -> list[str]:
    """The worker's log lines of a job once they hold `ended`: the worker logs a job's end
    after storing it, so a client may see the end before the line is written."""
    wait_until(lambda: ended in log_messages(stack, request_id), 10, f"the log line {ended!r}")
    return log_messages(stack, request_id)


def assert_stream_ends_as_the_job(aws: AwsClients, stack: LocalStack, job: dict[str, Any]) -> None:
    """The stored stream has one last event, and it says what the record says: the stored
    text and counts, and (for a job stopped early) why, as the error beside its output."""
    events = stored_events(aws, table_of(stack), job["request_id"])
    assert [e.seq for e in events] == list(range(len(events)))
    assert [i for i, e in enumerate(events) if e.is_last] == [len(events) - 1]
    last = events[-1]
    assert last.output is not None and last.output.finished, last
    assert text_of(events) == job["output"]["text"]
    assert last.output.num_completion_tokens == job["output"]["num_completion_tokens"]
    codes = {"SUCCEEDED": None, "CANCELLED": 499, "TIMED_OUT": 504}
    assert (last.error.status_code if last.error else None) == codes[job["status"]], last
