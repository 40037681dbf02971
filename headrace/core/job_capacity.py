"""The capacity part of a queued job's view (JobView.capacity, headrace.api.capacity)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class CapacityView(BaseModel):
    """Whether a QUEUED job's model has a worker: its wait is a cold start, or a queue."""

    state: Literal["scaling_from_zero", "serving"] = Field(
        description="scaling_from_zero: no worker serves the job's model (the fleet is starting "
        "one); serving: at least one does"
    )
    since: str | None = Field(
        default=None,
        description="scaling_from_zero: since when the job has waited with no worker serving "
        "its model (the later of its submit, or last retry, and the moment the last worker "
        "serving the model stopped)",
    )
    workers: int = Field(description="Workers serving the job's model now")
    backlog_ahead: int | None = Field(
        default=None,
        description="serving: jobs waiting in the job's lane, every model's, as SQS's approximate "
        "count of visible messages that a serving worker last read (at backlog_counted_at, every "
        "few seconds); SQS keeps no order, so it bounds the jobs ahead rather than giving a place",
    )
    backlog_counted_at: str | None = None
