"""A batch file's lines: each one validated as its route validates a request (the very mapping
of headrace.api.openai_serving, so a line is refused exactly when the request would be), and a
job's end made an output or error line in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from headrace.api.batch_protocol import InputLine, OutputLine, OutputResponse
from headrace.api.openai_chat import chat_job
from headrace.api.openai_protocol import OpenAIChatRequest, OpenAICompletionRequest
from headrace.api.openai_responses import OpenAIErrorDetail, error_of
from headrace.api.openai_serving import Kind, OpenAIJob, answer_for, completion_job
from headrace.api.services import ApiServices
from headrace.core.contracts import JobStatus, describe_validation_error
from headrace.core.errors import HeadraceError, InvalidRequest
from headrace.core.tables.jobs import JobRecord


@dataclass(frozen=True)
class LineJob:
    index: int  # the request's position in the file, from 0 (its job's id follows from it)
    custom_id: str
    job: OpenAIJob


def split_lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    """(index, line) of every line that is not blank; a file may end with a newline or not."""
    for index, line in enumerate(content.split(b"\n")):
        if line.strip():
            yield index, line


def parse_line(services: ApiServices, index: int, line: bytes) -> LineJob:
    """A line as a job; an InvalidRequest (or the route's own refusal) naming the line (from 1,
    as an editor numbers them) and the field."""
    try:
        try:
            parsed = InputLine.model_validate_json(line, strict=True)
        except ValidationError as e:
            if e.errors(include_url=False)[0]["type"] == "json_invalid":
                raise InvalidRequest("not valid JSON") from e
            raise InvalidRequest(describe_validation_error(e)) from e
        return LineJob(index, parsed.custom_id, _job(services, parsed))
    except HeadraceError as e:
        if e.status_code >= 500:
            raise
        raise type(e)(f"line {index + 1}: {e.detail}") from e


def _job(services: ApiServices, line: InputLine) -> OpenAIJob:
    body = json.dumps(line.body).encode()
    try:
        if line.url == "/v1/chat/completions":
            job = chat_job(services, OpenAIChatRequest.model_validate_json(body, strict=True))
        else:
            request = OpenAICompletionRequest.model_validate_json(body, strict=True)
            job = completion_job(services, request)
    except ValidationError as e:
        raise InvalidRequest(f"body.{describe_validation_error(e)}") from e
    except HeadraceError as e:
        if e.status_code >= 500:
            raise
        raise type(e)(f"body.{e.detail}") from e
    if job.stream:
        raise InvalidRequest("body.stream: a batch's requests are answered whole")
    return job


def parse_file(
    services: ApiServices, content: bytes, *, endpoint: str | None = None
) -> list[LineJob]:
    """Every line of a file, validated and numbered from 0 (blank lines left out); custom_ids
    unique; every url `endpoint`'s, if given."""
    jobs: list[LineJob] = []
    seen: dict[str, int] = {}
    for position, (index, line) in enumerate(split_lines(content)):
        if position >= services.settings.batch_max_lines:
            raise InvalidRequest(
                f"file: over the limit of {services.settings.batch_max_lines} lines"
            )
        job = parse_line(services, index, line)
        first = seen.setdefault(job.custom_id, index)
        if first != index:
            raise InvalidRequest(
                f"line {index + 1}: custom_id: {job.custom_id!r} is already line {first + 1}'s"
            )
        if endpoint is not None and job.job.kind != kind_of(endpoint):
            raise InvalidRequest(f"line {index + 1}: url: the batch's endpoint is {endpoint}")
        jobs.append(LineJob(position, job.custom_id, job.job))
    return jobs


def kind_of(endpoint: str) -> Kind:
    return "chat" if endpoint == "/v1/chat/completions" else "completion"


def _line_id(record: JobRecord) -> str:
    return f"batch_req_{record.request_id.replace('-', '')}"


def output_line(
    services: ApiServices, job: OpenAIJob, custom_id: str, record: JobRecord
) -> tuple[bool, OutputLine]:
    """(succeeded, the line): a SUCCEEDED job's response for the output file; any other end
    (failed, cancelled, timed out, never made) for the error file."""
    if record.status is JobStatus.SUCCEEDED and record.output is not None:
        answer = answer_for(services, job, record)
        response = OutputResponse(status_code=200, request_id=record.request_id, body=answer.body)
        return True, OutputLine(
            id=_line_id(record), custom_id=custom_id, response=response, error=None
        )
    if record.status is JobStatus.FAILED:
        answer = answer_for(services, job, record)
        response = OutputResponse(
            status_code=answer.status, request_id=record.request_id, body=answer.body
        )
        return False, OutputLine(
            id=_line_id(record), custom_id=custom_id, response=response, error=None
        )
    code = "batch_expired" if record.status is JobStatus.TIMED_OUT else "batch_cancelled"
    why = "passed its deadline" if code == "batch_expired" else "was cancelled"
    error = error_of(400, f"the request {why} before it completed", request_id=record.request_id)
    detail = error.error.model_copy(update={"code": code})
    return False, OutputLine(id=_line_id(record), custom_id=custom_id, response=None, error=detail)


def never_run(custom_id: str, request_id: str) -> OutputLine:
    """A line whose job was never made (the batch was cancelled first)."""
    detail = OpenAIErrorDetail(
        message="the batch was cancelled before this request was made",
        type="invalid_request_error",
        code="batch_cancelled",
        request_id=request_id,
    )
    return OutputLine(
        id=f"batch_req_{request_id.replace('-', '')}",
        custom_id=custom_id,
        response=None,
        error=detail,
    )
