"""Wire contracts of job control: the answer to a cancel, the WebSocket `cancel` frame, and the
last stream event of a job stopped before its end (cancelled, or past its deadline).

A halted job's last event is finished, with the last delta and the counts like any last event,
and also carries an error saying why (status 499, nginx's "client closed request", for a cancel;
504 for a deadline). A client of LLM Engine's stream shape that reads only `output` gets the
partial text whole (the deltas concatenate to the stored partial text); one that reads `error`
learns that it is partial.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from headrace.core.contracts import JobStatus, StreamError, StreamEvent, StreamOutput

HALT_STATUS_CODES: dict[JobStatus, int] = {JobStatus.CANCELLED: 499, JobStatus.TIMED_OUT: 504}
HALT_MESSAGES: dict[JobStatus, str] = {
    JobStatus.CANCELLED: "cancelled: the job was stopped at its owner's request",
    JobStatus.TIMED_OUT: "timed out: the job was not finished within its timeout_seconds",
}


class CancelResponse(BaseModel):
    """What `POST /v1/llm/completions/{request_id}/cancel` answers."""

    request_id: str
    status: JobStatus = Field(
        description="CANCELLED: done at once (the job had not started); otherwise the status "
        "the job has while it stops"
    )
    cancelling: bool = Field(
        description="True while the job stops: its worker learns of the cancel within "
        "HEADRACE_CANCEL_CHECK_MS and stops it within one decode step. It may still end "
        "SUCCEEDED if decoding finished first"
    )


class CancelFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["cancel"]
    request_id: str = Field(min_length=1, max_length=64)


class CancelAck(CancelResponse):
    """Answer to a `cancel` frame: CancelResponse's fields, as an acknowledgement."""

    type: Literal["accepted"] = "accepted"
    action: Literal["cancel"] = "cancel"


def halted_event(
    request_id: str | None,
    status: JobStatus,
    *,
    text: str,
    num_prompt_tokens: int | None,
    num_completion_tokens: int,
) -> StreamEvent:
    """The last event of a job stopped before its end (`status` CANCELLED or TIMED_OUT)."""
    output = StreamOutput(
        text=text,
        finished=True,
        num_prompt_tokens=num_prompt_tokens,
        num_completion_tokens=num_completion_tokens,
    )
    return StreamEvent(request_id=request_id, output=output, error=halt_error(status))


def halt_error(status: JobStatus) -> StreamError:
    """The error a halted job's last event carries (timestamped now)."""
    error = StreamEvent.failure(None, HALT_STATUS_CODES[status], HALT_MESSAGES[status]).error
    assert error is not None
    return error


def halted_status(event: StreamEvent) -> JobStatus | None:
    """CANCELLED or TIMED_OUT if `event` is the last event of a job stopped before its end."""
    if event.output is None or event.error is None or not event.output.finished:
        return None
    for status, code in HALT_STATUS_CODES.items():
        if event.error.status_code == code:
            return status
    return None
