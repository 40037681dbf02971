"""OpenAI's Batch API schemas: files, batches, the input line and the output and error lines."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headrace.api.openai_responses import OpenAIErrorDetail
from headrace.core.contracts import describe_validation_error
from headrace.core.errors import InvalidRequest

BatchEndpoint = Literal["/v1/completions", "/v1/chat/completions"]
ENDPOINTS: tuple[str, ...] = ("/v1/completions", "/v1/chat/completions")
MAX_CUSTOM_ID_LENGTH = 512


class InputLine(BaseModel):
    """One line of a batch's input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(
        min_length=1, max_length=MAX_CUSTOM_ID_LENGTH, description="Unique within the file"
    )
    method: Literal["POST"]
    url: BatchEndpoint
    body: dict[str, Any] = Field(description="A request the route `url` accepts")


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["processed"] = "processed"
    status_details: None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreateRequest(BaseModel):
    """`POST /v1/batches`."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(
        default=None, description="Up to 16 pairs, keys up to 64 and values up to 512 characters"
    )


class RequestCounts(BaseModel):
    total: int = Field(description="Lines of the input file")
    completed: int = Field(description="Its jobs that SUCCEEDED")
    failed: int = Field(description="Its jobs that FAILED or TIMED_OUT")


class BatchError(BaseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


BatchState = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchState
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = Field(default=None, description="The end of the completion window")
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class OutputResponse(BaseModel):
    status_code: int
    request_id: str = Field(description="The job's request_id (GET /v1/llm/completions/{id})")
    body: dict[str, Any] = Field(description="The completion or chat completion; or the error")


class OutputLine(BaseModel):
    """A line of the output file (a job that succeeded) or the error file (one that did not)."""

    id: str
    custom_id: str
    response: OutputResponse | None
    error: OpenAIErrorDetail | None


def parse_create(body: bytes) -> BatchCreateRequest:
    """`POST /v1/batches`'s body; an InvalidRequest naming the field (a body that is not JSON
    too, as OpenAI answers)."""
    try:
        return BatchCreateRequest.model_validate_json(body, strict=True)
    except ValidationError as e:
        if e.errors(include_url=False)[0]["type"] == "json_invalid":
            raise InvalidRequest("body: not valid JSON") from e
        raise InvalidRequest(describe_validation_error(e)) from e
