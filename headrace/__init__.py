"""Headrace: queue-driven LLM completions (API Gateway, Lambda, SQS, DynamoDB, CTranslate2)."""

from headrace.client import (
    BadRequestError,
    Completion,
    CompletionTimeoutError,
    HeadraceClientError,
    HeadraceConnectionError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    UnauthorizedError,
)

__version__ = "0.1.0"

__all__ = [
    "BadRequestError",
    "Completion",
    "CompletionTimeoutError",
    "HeadraceClientError",
    "HeadraceConnectionError",
    "NotFoundError",
    "RateLimitExceededError",
    "ServerError",
    "UnauthorizedError",
    "__version__",
]
