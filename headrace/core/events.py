"""Events: what comes in on the bus (Completion Requested), what goes out of it (a job's start
and final state, a refused request), and the webhook body built from the same detail.

Out-events are derived from the jobs table's stream (headrace.api.job_events), so every one is
a stored state; each carries an `event_id` that is the same however often it is emitted.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from headrace.core.contracts import CallbackEvent, CompletionRequest, JobError, JobStatus

SOURCE = "headrace"
REQUESTED = "Completion Requested"
REJECTED = "Completion Rejected"
STARTED = "Completion Started"
FINAL_DETAIL_TYPES: dict[JobStatus, str] = {
    JobStatus.SUCCEEDED: "Completion Succeeded",
    JobStatus.FAILED: "Completion Failed",
    JobStatus.CANCELLED: "Completion Cancelled",
    JobStatus.TIMED_OUT: "Completion Timed Out",
}
# A job's event as a request's callback_events names it, and as a webhook's `type` does.
CALLBACK_NAMES: dict[str, CallbackEvent] = {
    STARTED: "started",
    "Completion Succeeded": "succeeded",
    "Completion Failed": "failed",
    "Completion Cancelled": "cancelled",
    "Completion Timed Out": "timed_out",
}

# EventBridge takes 256 KB an entry, envelope included, and a webhook's payload is kept in one
# DynamoDB item (400 KB): a detail larger than this goes without the output text
# (`output_omitted`); the job view has it.
MAX_DETAIL_BYTES = 200 * 1024

_EVENT_IDS = uuid.UUID("6b1f3c52-4c57-4f0e-9d53-5f0c7c1e2a10")


def event_id(*parts: object) -> str:
    """The same id for the same event, however often it is derived and sent."""
    return str(uuid.uuid5(_EVENT_IDS, "/".join(str(p) for p in parts)))


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="milliseconds")


# ---- in: the intake's request ------------------------------------------------------------------


class IntakeRequest(CompletionRequest):
    """A Completion Requested event's detail, or a message sent to the intake queue: the HTTP
    request's fields, the owner's API key id, and optionally the job's request_id (a UUID the
    sender chooses, so that sending it twice makes one job)."""

    model_config = ConfigDict(extra="forbid")

    owner: str = Field(description="The public id (hk_...) of the API key the job belongs to")
    request_id: str | None = Field(
        default=None, description="A UUID for the job; by default one derived from the event id"
    )

    def completion_request(self) -> CompletionRequest:
        fields = self.model_dump(exclude={"owner", "request_id"}, exclude_unset=True)
        return CompletionRequest.model_validate(fields)


# ---- out: a job's events -----------------------------------------------------------------------


class Timings(BaseModel):
    queued_at: str = Field(description="When the job was submitted")
    started_at: str | None = Field(default=None, description="When a worker last claimed it")
    first_token_at: str | None = Field(
        default=None,
        description="When its first token came (the decoder's or the stream's time)",
    )
    finished_at: str | None = None


class CompletionEventDetail(BaseModel):
    """The detail of Completion Started, Succeeded, Failed, Cancelled and Timed Out."""

    event_id: str = Field(description="Stable: the same event sent twice has the same id")
    request_id: str
    status: JobStatus
    model: str
    owner: str = Field(description="The public id (hk_...) of the job's API key")
    metadata: dict[str, Any] | None = None
    attempts: int
    num_prompt_tokens: int | None = None
    num_completion_tokens: int | None = None
    timings: Timings
    output: dict[str, Any] | None = Field(
        default=None, description="The result (partial when cancelled or timed out)"
    )
    output_omitted: bool = Field(
        default=False, description="The output did not fit in the event: read the job view"
    )
    error: JobError | None = None


class RejectedDetail(BaseModel):
    """The detail of Completion Rejected: an intake request refused, and why."""

    event_id: str
    reason: str = Field(description="As the HTTP API's 4xx detail would say it")
    status_code: int = Field(description="What the HTTP API would have answered")
    source_event_id: str | None = Field(
        default=None, description="The id of the Completion Requested event refused"
    )
    message_id: str | None = Field(default=None, description="The intake queue's message id")
    request_id: str | None = None
    owner: str | None = None
    metadata: dict[str, Any] | None = None


def detail_bytes(detail: BaseModel) -> str:
    return detail.model_dump_json()


def fitted(detail: CompletionEventDetail) -> CompletionEventDetail:
    """The detail, without its output if it would not fit in an event."""
    if detail.output is None or len(detail_bytes(detail).encode()) <= MAX_DETAIL_BYTES:
        return detail
    return detail.model_copy(update={"output": None, "output_omitted": True})


class WebhookPayload(BaseModel):
    """The body POSTed to a callback_url (Standard Webhooks' shape: type, timestamp, data)."""

    type: Literal[
        "completion.started",
        "completion.succeeded",
        "completion.failed",
        "completion.cancelled",
        "completion.timed_out",
    ]
    timestamp: str
    data: CompletionEventDetail


def webhook_payload(detail_type: str, detail: CompletionEventDetail, timestamp: str) -> str:
    kind = CALLBACK_NAMES[detail_type]
    body = {
        "type": f"completion.{kind}",
        "timestamp": timestamp,
        "data": json.loads(detail_bytes(detail)),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
