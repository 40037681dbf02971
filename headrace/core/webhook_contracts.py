"""What the webhook routes answer, and the message that asks the sender for one delivery."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# What became of one attempt: `delivered` (2xx), `retrying` (a timeout, no connection, 5xx or
# 429: another attempt follows at `next_retry_at`), `failed` (any other answer, or a refused
# address: never retried), `given_up` (the retryable kind, after the last retry).
AttemptOutcome = Literal["delivered", "retrying", "failed", "given_up"]


class DeliveryAttempt(BaseModel):
    """One POST of one event to the job's callback_url."""

    event_id: str = Field(description="The event's id, also the webhook-id header")
    type: str = Field(description="The webhook's type, e.g. completion.succeeded")
    attempt: int = Field(description="1 for the first try of a delivery, counting its retries")
    redelivery: bool = Field(default=False, description="Asked for by POST .../redeliver")
    at: str = Field(description="When the attempt was made")
    url: str
    status_code: int | None = Field(default=None, description="The receiver's answer, if any")
    latency_ms: float | None = None
    error: str | None = Field(default=None, description="Why it did not succeed")
    response_body: str | None = Field(
        default=None, description="The first KB of the receiver's answer"
    )
    outcome: AttemptOutcome
    next_retry_at: str | None = Field(default=None, description="When the next attempt is due")


class DeliveriesView(BaseModel):
    """What `GET /v1/llm/completions/{request_id}/deliveries` answers: every attempt, oldest
    first."""

    request_id: str
    callback_url: str | None
    deliveries: list[DeliveryAttempt]


class RedeliverResponse(BaseModel):
    request_id: str
    event_id: str
    type: str
    status: Literal["scheduled"] = "scheduled"


class WebhookSecret(BaseModel):
    """The key's signing secret (Standard Webhooks' `whsec_` form)."""

    secret: str
    previous_secret: str | None = Field(
        default=None, description="The secret rotated out, which still signs until it expires"
    )
    previous_expires_at: str | None = None


class DeliveryOrder(BaseModel):
    """The webhook queue's message: deliver one event of one job (its payload is stored)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    event_id: str
    attempt: int = Field(default=1, ge=1)
    redelivery: bool = False
    not_before: float = Field(
        default=0.0, description="Epoch seconds; a message read earlier waits again"
    )
