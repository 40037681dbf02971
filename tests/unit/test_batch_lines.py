"""The pure parts of OpenAI's Batch API: a file's lines validated as their routes validate a
request, a job's end shaped as an output or error line, the counted-once write, and the CLI's
conversion of Headrace's prompt lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from headrace.api import batch_files, batch_lines
from headrace.api.batch_lines import parse_file
from headrace.api.openai_serving import OpenAIJob
from headrace.api.services import ApiServices
from headrace.client.server_batch import batch_line, result_record
from headrace.client.submit_file import InputFileError, PromptLine
from headrace.core.contracts import CompletionRequest, JobError, JobStatus
from headrace.core.errors import InvalidRequest, NotFound, PayloadTooLarge
from headrace.core.settings import Settings
from headrace.core.tables import batches as batch_table
from headrace.core.tables.jobs import JobRecord

SERVICES = ApiServices(
    settings=Settings(model_zoo={"m": "/models/m"}, max_prompt_bytes=64, batch_max_lines=3),
    dynamodb=None,
    sqs=None,
)


def line(custom_id: str = "a", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "m", "prompt": "The river", "max_tokens": 3, **body},
    }


def jsonl(*lines: Any) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def test_lines_become_the_jobs_their_route_would_make() -> None:
    jobs = parse_file(SERVICES, jsonl(line("a"), "", line("b", temperature=0)))
    assert [(j.index, j.custom_id) for j in jobs] == [(0, "a"), (1, "b")]  # blank lines skipped
    assert jobs[1].job.request.max_new_tokens == 3 and jobs[1].job.request.temperature == 0
    assert jobs[0].job.kind == "completion" and jobs[0].job.model == "m"


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (jsonl(line("a"), "{not json"), InvalidRequest, "line 2: not valid JSON"),
        (jsonl(line("a"), line("a")), InvalidRequest, "line 2: custom_id: 'a' is already line 1"),
        (jsonl({**line(), "method": "GET"}), InvalidRequest, "line 1: method"),
        (jsonl({**line(), "url": "/v1/embeddings"}), InvalidRequest, "line 1: url"),
        (jsonl({**line(), "extra": 1}), InvalidRequest, "line 1: extra: unknown field"),
        (jsonl(line(max_tokens=0)), InvalidRequest, "line 1: body.max_tokens"),
        (jsonl(line(n=2)), InvalidRequest, "line 1: body.n: not supported"),
        (jsonl(line(stream=True)), InvalidRequest, "line 1: body.stream"),
        (jsonl(line(model="nope")), NotFound, "line 1: body.model"),
        (jsonl(line(prompt="x" * 100)), PayloadTooLarge, "line 1: body.prompt"),
        (jsonl(*[line(str(i)) for i in range(4)]), InvalidRequest, "over the limit of 3 lines"),
    ],
)
def test_a_bad_line_is_named(content: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_file(SERVICES, content)


def test_a_line_for_another_endpoint_than_the_batchs_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="line 1: url: the batch's endpoint"):
        parse_file(SERVICES, jsonl(line()), endpoint="/v1/chat/completions")


def test_the_upload_form_is_read_as_openais_sdk_sends_it() -> None:
    form = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + jsonl(line()) + b"\r\n--b--\r\n"
    )
    upload = batch_files.parse_form("multipart/form-data; boundary=b", form)
    assert (upload.purpose, upload.filename, upload.content) == ("batch", "in.jsonl", jsonl(line()))
    with pytest.raises(InvalidRequest, match="multipart"):
        batch_files.parse_form("application/json", b"{}")


def record(status: JobStatus, **fields: Any) -> JobRecord:
    request = CompletionRequest(
        model="m", prompt="p", max_new_tokens=2, metadata={"custom_id": "a"}
    )
    return JobRecord(
        request_id="7d1f0c7e-3c3a-4d0e-9d55-0e3f8a0f1a11",
        owner="o",
        model="m",
        status=status,
        attempts=1,
        request=request,
        created_at=1000.0,
        updated_at=1000.0,
        **fields,
    )


JOB = OpenAIJob(
    kind="completion", model="m", request=CompletionRequest(prompt="p", max_new_tokens=2)
)


def test_a_succeeded_job_is_an_output_line_with_openais_completion() -> None:
    output = {"text": " the", "num_prompt_tokens": 1, "num_completion_tokens": 2}
    ok, shaped = batch_lines.output_line(
        SERVICES, JOB, "a", record(JobStatus.SUCCEEDED, output=output)
    )
    assert ok and shaped.error is None and shaped.custom_id == "a"
    assert shaped.response is not None and shaped.response.status_code == 200
    body = shaped.response.body
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == " the"
    assert body["id"] == shaped.response.request_id and body["usage"]["total_tokens"] == 3
    assert shaped.id.startswith("batch_req_")


def test_failed_cancelled_and_timed_out_jobs_are_error_lines() -> None:
    error = JobError(message="boom", type="decode_failed")
    ok, failed = batch_lines.output_line(SERVICES, JOB, "a", record(JobStatus.FAILED, error=error))
    assert not ok and failed.response is not None and failed.response.status_code == 500
    assert "boom" in failed.response.body["error"]["message"]
    for status, code in (
        (JobStatus.CANCELLED, "batch_cancelled"),
        (JobStatus.TIMED_OUT, "batch_expired"),
    ):
        ok, halted = batch_lines.output_line(SERVICES, JOB, "a", record(status))
        assert not ok and halted.response is None and halted.error is not None
        assert halted.error.code == code


def test_job_ids_follow_from_the_batch_and_the_line() -> None:
    assert batch_table.job_id("batch_x", 3) == batch_table.job_id("batch_x", 3)
    assert batch_table.job_id("batch_x", 3) != batch_table.job_id("batch_x", 4)
    assert batch_files.derived_id("batch_x", "output") != batch_files.derived_id("batch_x", "error")


def test_final_states_are_counted_once_each_by_conditional_markers_in_one_transaction() -> None:
    finals = [("r", "TIMED_OUT"), ("s", "SUCCEEDED"), ("t", "FAILED")]
    request = batch_table.count_final("t", owner="o", batch_id="b", finals=finals, expires_at=1)
    *markers, counter = request["TransactItems"]
    assert [m["Put"]["ConditionExpression"] for m in markers] == ["attribute_not_exists(pk)"] * 3
    assert [m["Put"]["Item"]["pk"] for m in markers] == [
        {"S": "job#r"},
        {"S": "job#s"},
        {"S": "job#t"},
    ]
    update = counter["Update"]
    assert update["UpdateExpression"] == "ADD completed :completed, failed :failed"
    assert update["ExpressionAttributeValues"] == {":completed": {"N": "1"}, ":failed": {"N": "2"}}


def test_the_cli_converts_prompt_lines_and_results() -> None:
    prompt = PromptLine(7, {"prompt": "p", "max_new_tokens": 4, "return_token_log_probs": True})
    converted = batch_line(prompt, "m", {"temperature": 0.0})
    assert converted["custom_id"] == "7" and converted["url"] == "/v1/completions"
    assert converted["body"] == {
        "temperature": 0.0,
        "prompt": "p",
        "max_tokens": 4,
        "logprobs": 0,
        "model": "m",
    }
    with pytest.raises(InputFileError, match="guided_regex"):
        batch_line(PromptLine(1, {"prompt": "p", "guided_regex": "a"}), "m", {})
    body = {
        "id": "r",
        "choices": [{"text": "x", "logprobs": {"tokens": ["x"], "token_logprobs": [-0.5]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    done = result_record(
        prompt, {"response": {"status_code": 200, "request_id": "r", "body": body}}
    )
    assert done == {
        "id": 7,
        "request_id": "r",
        "status": "SUCCEEDED",
        "output": {
            "text": "x",
            "num_prompt_tokens": 1,
            "num_completion_tokens": 1,
            "tokens": [{"token": "x", "log_prob": -0.5}],
        },
    }
    halted = {
        "response": None,
        "error": {"code": "batch_cancelled", "message": "m", "request_id": "r"},
    }
    assert result_record(prompt, halted)["status"] == "CANCELLED"
