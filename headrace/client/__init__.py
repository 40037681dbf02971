"""The Headrace Python client: `Completion`, shaped like Scale's LLM Engine client.

from headrace import Completion

response = Completion.create(model="headrace-tiny", prompt="The river", max_new_tokens=20)
print(response.output.text)

for response in Completion.create(prompt="The river", stream=True):
    print(response.output.text, end="")
"""

from headrace.client._config import (
    ClientConfig,
    configure,
    current_config,
    reset_configuration,
)
from headrace.client.batch import BatchResult
from headrace.client.completion import Completion
from headrace.client.errors import (
    BadRequestError,
    CompletionTimeoutError,
    HeadraceClientError,
    HeadraceConnectionError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    UnauthorizedError,
)
from headrace.client.responses import CompletionStreamResponse, CompletionSyncResponse
from headrace.core.contracts import CompletionOutput, JobView, StreamOutput, TokenOutput

__all__ = [
    "BadRequestError",
    "BatchResult",
    "ClientConfig",
    "Completion",
    "CompletionOutput",
    "CompletionStreamResponse",
    "CompletionSyncResponse",
    "CompletionTimeoutError",
    "HeadraceClientError",
    "HeadraceConnectionError",
    "JobView",
    "NotFoundError",
    "RateLimitExceededError",
    "ServerError",
    "StreamOutput",
    "TokenOutput",
    "UnauthorizedError",
    "configure",
    "current_config",
    "reset_configuration",
]
