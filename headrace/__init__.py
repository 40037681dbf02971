"""Headrace: queue-driven LLM completions (API Gateway, Lambda, SQS, DynamoDB, CTranslate2).

`from headrace import Completion` (or `Model`) loads the Python client on first use only: the
Lambda handlers and the worker live in this package too, and every cold start pays for each
import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headrace.client import (
        BadRequestError,
        Completion,
        CompletionTimeoutError,
        HeadraceClientError,
        HeadraceConnectionError,
        Model,
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
    "Model",
    "NotFoundError",
    "RateLimitExceededError",
    "ServerError",
    "UnauthorizedError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("headrace.client"), name)
    raise AttributeError(f"module 'headrace' has no attribute {name!r}")
