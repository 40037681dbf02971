"""Wire contracts: the completion request, results, stream events and the SQS job message.

Field names and ranges follow Scale's LLM Engine client so its users can point it at Headrace.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headrace.core.errors import InvalidRequest, UnprocessableBody
from headrace.core.job_capacity import CapacityView

# Fields in the LLM Engine contract that CTranslate2 cannot honour. Sending a value that would
# change decoding is a 400 naming the field; it is never silently ignored. (The guided_* fields
# are honoured; headrace.core.guides checks them.)
UNSUPPORTED_FIELDS: dict[str, str] = {
    "presence_penalty": "CTranslate2 has no presence penalty",
    "frequency_penalty": "CTranslate2 has no frequency penalty",
}


# Bounds the engine needs and LLM Engine's ranges leave open. A top_k at or above a model's
# vocabulary is no cut at all (the worker makes it so; the API does not know the vocabulary):
# this only keeps the number one the engine can take. Below MIN_TOP_P every top_p keeps the
# most likely token alone (it holds at least 1/vocabulary of the mass), and one that rounds to 0
# as a float32 (5e-324) made CTranslate2 fail the job on every attempt.
MAX_TOP_K = 1_000_000
MIN_TOP_P = 1e-6

# The queue a job waits in: workers take interactive jobs first and batch jobs in the room
# left (a bounded share of it while both wait). Not an LLM Engine field.
Priority = Literal["interactive", "batch"]

# Which of a job's events its callback_url hears of (headrace.core.events); by default the final
# ones. Not LLM Engine fields, except callback_url, LLM Engine's name.
CallbackEvent = Literal["started", "succeeded", "failed", "cancelled", "timed_out"]
FINAL_CALLBACK_EVENTS: tuple[CallbackEvent, ...] = ("succeeded", "failed", "cancelled", "timed_out")
# A request's `metadata` travels with every event, webhook and job view: kept small, as JSON.
MAX_METADATA_BYTES = 2048
MAX_CALLBACK_URL_LENGTH = 2048


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=128)
    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(default=20, ge=1)
    temperature: float = Field(default=0.2, ge=0.0, le=1.0)
    stop_sequences: list[str] | None = None
    return_token_log_probs: bool | None = False
    presence_penalty: float | None = Field(default=None, ge=0.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOP_K)
    top_p: float | None = Field(default=None, ge=MIN_TOP_P, le=1.0)
    include_stop_str_in_output: bool | None = None
    guided_json: dict[str, Any] | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    skip_special_tokens: bool | None = True
    # Seconds from the submit until the job must be final: past it the job ends TIMED_OUT,
    # never decoded if it had not started, stopped with its partial text if it had. The API
    # fills in HEADRACE_DEFAULT_TIMEOUT_SECONDS and refuses more than the maximum. Not an LLM
    # Engine field.
    timeout_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    priority: Priority = "interactive"
    # Echoed in the job's events, webhooks and view; at most MAX_METADATA_BYTES as JSON.
    metadata: dict[str, Any] | None = None
    # Where the job's events are POSTed, signed (Standard Webhooks); checked by the API against
    # private and loopback addresses (headrace.api.webhook_urls).
    callback_url: str | None = Field(default=None, min_length=1, max_length=MAX_CALLBACK_URL_LENGTH)
    callback_events: list[CallbackEvent] | None = Field(default=None, min_length=1)

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_METADATA_BYTES:
                raise ValueError(f"{size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}")
        return value

    def callback_wants(self, event: CallbackEvent) -> bool:
        """Whether the callback_url hears of `event` (the final ones unless it chose)."""
        wanted = self.callback_events or FINAL_CALLBACK_EVENTS
        return self.callback_url is not None and event in wanted

    @field_validator("stop_sequences")
    @classmethod
    def _stop_sequences_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not s for s in value):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    def unsupported_field(self) -> tuple[str, str] | None:
        """The first field set to a value the engine cannot honour, with the reason."""
        for name, reason in UNSUPPORTED_FIELDS.items():
            value = getattr(self, name)
            # A zero penalty changes nothing, so it is honoured exactly.
            if value is None or (name.endswith("_penalty") and value == 0):
                continue
            return name, reason
        return None


def parse_completion_request(body: bytes | str) -> CompletionRequest:
    """Validate a JSON body; every failure is an InvalidRequest naming the field."""
    try:
        return CompletionRequest.model_validate_json(body, strict=True)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error")
            raise UnprocessableBody(
                f"body: not valid JSON ({reason})" if reason else "body: not valid JSON"
            ) from e
        raise InvalidRequest(describe_validation_error(e)) from e


def describe_validation_error(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return f"{location}: unknown field"
    if first["type"] == "missing":
        return f"{location}: field required"
    return f"{location}: {first['msg']}"


class TokenOutput(BaseModel):
    token: str
    log_prob: float


class CompletionOutput(BaseModel):
    text: str
    num_prompt_tokens: int | None = None
    num_completion_tokens: int
    tokens: list[TokenOutput] | None = None

    def to_wire(self) -> dict[str, Any]:
        # `tokens` appears only when log probs were asked for (DESIGN.md result shape).
        return self.model_dump(exclude_none=True)


class CompletionSyncResponse(BaseModel):
    """A finished completion: `request_id` and `output` (text, token counts, tokens)."""

    request_id: str
    output: CompletionOutput


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED) or self.is_halted

    @property
    def is_halted(self) -> bool:
        """Stopped before its end (cancelled, or past its deadline): its output is partial."""
        return self in (JobStatus.CANCELLED, JobStatus.TIMED_OUT)


class JobMessage(BaseModel):
    """The SQS message body. Everything the worker needs, so a job can run even if its record
    is missing (event-driven submits write no record before enqueueing)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    request_id: str = Field(min_length=1, max_length=64)
    owner: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1)
    request: CompletionRequest
    submitted_at: float


# Why a job FAILED: its message never reached the queue (the API), decoding failed on every
# attempt the queue allows (the worker), or the request cannot run on its model, which only the
# worker can tell (its prompt's tokens plus max_new_tokens overflow the model's context): the
# worker fails that one at once, and the sync route answers 400. The API rejects every other
# bad request before it becomes a job.
JobErrorType = Literal["enqueue_failed", "decode_failed", "invalid_request"]


class JobError(BaseModel):
    message: str
    type: JobErrorType


class AttemptView(BaseModel):
    """One claim of a job by a worker, and how it ended."""

    attempt: int = Field(description="The claim's number, from 1")
    worker: str
    decodes: bool = Field(
        description="False: the claim only ended the job (a cancel or deadline found at "
        "claim, a job given up) and did not count as an attempt"
    )
    started_at: str
    ended_at: str | None = None
    outcome: str = Field(
        description="The final status it stored, HANDED_BACK (the worker gave the job back: "
        "shutdown, a transient failure), RUNNING (the current one) or LOST (its worker's lease "
        "lapsed: it died, or stalled, and a later claim took the job over)"
    )
    error: str | None = None


class JobView(BaseModel):
    """What `GET /v1/llm/completions/{request_id}` answers."""

    request_id: str
    status: JobStatus
    model: str
    attempts: int
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    output: dict[str, Any] | None = Field(
        default=None,
        description="When SUCCEEDED; the partial text and counts when CANCELLED or TIMED_OUT",
    )
    error: JobError | None = None
    deadline: str | None = Field(
        default=None,
        description="When the job must be final: timeout_seconds after created_at, or after "
        "the last retry",
    )
    cancel_requested_at: str | None = Field(
        default=None,
        description="When a cancel was first asked for; while the job is not final, it is "
        "stopping (a job that finished first stays SUCCEEDED)",
    )
    priority: Priority = "interactive"
    attempt_history: list[AttemptView] = Field(
        default_factory=list, description="Every claim of the job by a worker, oldest first"
    )
    dead_lettered_at: str | None = Field(
        default=None,
        description="When a worker last found the job's message in the dead-letter queue (it "
        "then sends it back to the queue while the job has attempts left, else ends the job)",
    )
    retries: int = Field(default=0, description="Times the job was queued again by POST .../retry")
    owner: str | None = Field(
        default=None, description="The public id (hk_...) of the API key the job belongs to"
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="The request's metadata, as every event and webhook echoes it"
    )
    callback_url: str | None = Field(
        default=None, description="Where the job's events are POSTed (GET .../deliveries)"
    )
    capacity: CapacityView | None = Field(
        default=None,
        description="While QUEUED: whether a worker serves the job's model, and the backlog",
    )


class SubmitResponse(BaseModel):
    request_id: str
    status: JobStatus = JobStatus.QUEUED


class ModelEndpoint(BaseModel):
    """A model, in the shape of LLM Engine's model endpoint (`GetLLMModelEndpointV1Response`)
    where a field has a true value, null where Headrace has none, plus Headrace's own fields.

    The LLM Engine client's `Model.list()`/`Model.get()` reject it: their closed enum of
    inference frameworks has no CTranslate2, and their only `source` is Hugging Face."""

    id: None = Field(default=None, description="LLM Engine's generated endpoint id: none here")
    name: str = Field(description="The model's name in the zoo; what a completion names")
    model_name: str = Field(description="The base model: the name itself (no fine-tunes)")
    source: None = Field(
        default=None, description="Not recorded: an artifact may come from anywhere"
    )
    status: Literal["READY", "NO_WORKER"] = Field(
        description="READY while a worker serves the model; NO_WORKER otherwise (its jobs "
        "wait in the queue for one)"
    )
    inference_framework: Literal["ctranslate2"] = "ctranslate2"
    inference_framework_tag: None = Field(
        default=None, description="The worker's image tag: not known to the API"
    )
    num_shards: Literal[1] = Field(
        default=1, description="A worker holds the whole model on one device"
    )
    quantize: None = Field(
        default=None, description="The compute type is the worker's setting: not known to the API"
    )
    spec: None = Field(default=None, description="LLM Engine's deployment details: none here")
    served: bool = Field(
        description="Whether a worker's announcement of the model is current (renewed within "
        "HEADRACE_PRESENCE_TTL_SECONDS, 30 s)"
    )
    artifact: str = Field(description="Where the CTranslate2 model directory is (S3 or a path)")
    context_length: int | None = Field(
        default=None,
        description="Most tokens a job may take, prompt plus max_new_tokens, as the worker "
        "that last announced the model enforces it; null if none has said",
    )


class ModelEndpointsResponse(BaseModel):
    """What `GET /v1/llm/model-endpoints` answers (LLM Engine's list shape, plus the default)."""

    model_endpoints: list[ModelEndpoint]
    default_model: str


# ---- Streaming (WebSocket events; also the LLM Engine SSE event shape) -----------------------


class StreamOutput(BaseModel):
    text: str  # the delta since the previous event
    finished: bool
    num_prompt_tokens: int | None = None
    num_completion_tokens: int | None = None
    token: TokenOutput | None = None


class StreamErrorContent(BaseModel):
    error: str
    timestamp: str


class StreamError(BaseModel):
    status_code: int
    content: StreamErrorContent


class StreamEvent(BaseModel):
    """One event of a job's stream. `seq` numbers a job's events from 0 without gaps, so a
    client can resume with `subscribe` from the first seq it has not seen."""

    request_id: str | None
    seq: int | None = None
    output: StreamOutput | None = None
    error: StreamError | None = None

    @property
    def is_last(self) -> bool:
        return self.error is not None or (self.output is not None and self.output.finished)

    @classmethod
    def failure(cls, request_id: str | None, status_code: int, message: str) -> StreamEvent:
        """The one error event that ends a stream (LLM Engine's shape, timestamped now)."""
        timestamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        content = StreamErrorContent(error=message, timestamp=timestamp)
        return cls(
            request_id=request_id, error=StreamError(status_code=status_code, content=content)
        )


class WebSocketAck(BaseModel):
    """Answer to a `complete` or `subscribe` frame; stream events for request_id follow.
    (A `cancel` frame's answer, headrace.core.control.CancelAck, reads as one too.)"""

    type: Literal["accepted"] = "accepted"
    action: Literal["complete", "subscribe", "cancel"]
    request_id: str
    status: JobStatus
    from_seq: int = 0


class SubscribeFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["subscribe"]
    request_id: str = Field(min_length=1, max_length=64)
    from_seq: int = Field(default=0, ge=0)
