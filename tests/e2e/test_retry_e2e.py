"""Retry and attempt history over the wire: a job failed by a lost worker, queued again with
POST .../retry under the same request_id, decoded anew; what the job view says of each attempt;
409 for a job that is not FAILED or TIMED_OUT, 404 for another key's."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

from headrace.core.tables import jobs as job_table
from headrace.dev.stack import LocalStack
from tests.e2e.lease_support import (
    assert_one_stream,
    aws_clients,
    decoding_job,
    greedy_text,
    lease_stack,
    stored_events,
    text_of,
)
from tests.e2e.support import Api
from tests.e2e.test_cli_client import env_for, headrace


def test_a_failed_job_retried_succeeds_under_its_id_with_every_attempt_in_view(
    model_home: Path, tmp_path: Path, dev_model_dir: Path
) -> None:
    # Long enough to be killed mid-run (it is, once two chunks are stored), short enough to
    # decode twice quickly.
    prompt, max_new_tokens = "The river", 2500
    with lease_stack(
        model_home, tmp_path, workers=0, settings={"HEADRACE_MAX_ATTEMPTS": "1"}
    ) as stack:
        assert stack.resources is not None
        table = stack.resources.table_name
        aws = aws_clients(stack)
        api = Api(stack.base_url, stack.api_key)
        first, request_id = decoding_job(stack, aws, api, prompt, max_new_tokens)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        stack.start_worker()
        failed = api.wait(request_id, timeout=60)
        status, answer = api.call("POST", f"/v1/llm/completions/{request_id}/retry")
        done = api.wait(request_id, timeout=120)
        events = stored_events(aws, table, request_id)
        aws.close()

    assert failed["status"] == "FAILED", failed
    lost, gave_up = failed["attempt_history"]
    assert (lost["outcome"], lost["decodes"], lost.get("ended_at")) == ("LOST", True, None)
    assert (gave_up["outcome"], gave_up["decodes"]) == ("FAILED", False)
    assert gave_up["error"] == "gave up after 1 attempt: worker lost"
    assert lost["worker"] != gave_up["worker"]

    assert (status, answer) == (202, {"request_id": request_id, "status": "QUEUED"})
    text, tokens = greedy_text(dev_model_dir, prompt, max_new_tokens)
    assert done["status"] == "SUCCEEDED", done
    assert done["attempts"] == 2 and done["retries"] == 1
    assert done["output"]["text"] == text and done["output"]["num_completion_tokens"] == tokens
    assert [a["outcome"] for a in done["attempt_history"]] == ["LOST", "FAILED", "SUCCEEDED"]
    assert done["attempt_history"][2]["ended_at"] is not None
    # The retry's stream is a new one: seq 0 on, one text, nothing of the failed run's.
    assert_one_stream(events)
    assert text_of(events) == text


def test_only_a_failed_or_timed_out_job_of_the_same_key_can_be_retried(
    api: Api, stack: LocalStack
) -> None:
    request_id = api.submit({"prompt": "The mill", "max_new_tokens": 4, "temperature": 0})
    assert api.wait(request_id)["status"] == "SUCCEEDED"
    status, answer = api.call("POST", f"/v1/llm/completions/{request_id}/retry")
    assert status == 409, answer
    assert "SUCCEEDED" in answer["detail"]

    assert stack.resources is not None
    other_key = f"hr-test-retry-{uuid.uuid4().hex[:12]}"
    clients = aws_clients(stack)
    clients.dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, other_key, name="other", now=0.0)
    )
    clients.close()
    status, answer = Api(stack.base_url, other_key).call(
        "POST", f"/v1/llm/completions/{request_id}/retry"
    )
    assert status == 404, answer
    status, answer = api.call("POST", f"/v1/llm/completions/{uuid.uuid4()}/retry")
    assert status == 404, answer


def test_the_cli_retries_and_says_why_it_cannot(
    api: Api, stack: LocalStack, tmp_path: Path
) -> None:
    request_id = api.submit({"prompt": "The mill", "max_new_tokens": 4, "temperature": 0})
    api.wait(request_id)
    refused = headrace("retry", request_id, env=env_for(stack, tmp_path))
    assert refused.returncode == 1 and refused.stdout == ""
    assert "is SUCCEEDED" in refused.stderr and "(HTTP 409)" in refused.stderr
