"""The Headrace Python client: `Completion` and `Model`, shaped like Scale's LLM Engine client.

from headrace import Completion, Model

response = Completion.create(model="headrace-tiny", prompt="The river", max_new_tokens=20)
print(response.output.text)

for response in Completion.create(prompt="The river", stream=True):
    print(response.output.text, end="")

print([m.name for m in Model.list().model_endpoints], Model.get("headrace-tiny").status)
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
from headrace.client.model import GetLLMEndpointResponse, ListLLMEndpointsResponse, Model
from headrace.client.responses import CompletionStreamResponse, CompletionSyncResponse
from headrace.core.contracts import CompletionOutput, JobView, StreamOutput, TokenOutput
from headrace.core.control import CancelResponse

__all__ = [
    "BadRequestError",
    "BatchResult",
    "CancelResponse",
    "ClientConfig",
    "Completion",
    "CompletionOutput",
    "CompletionStreamResponse",
    "CompletionSyncResponse",
    "CompletionTimeoutError",
    "GetLLMEndpointResponse",
    "HeadraceClientError",
    "HeadraceConnectionError",
    "JobView",
    "ListLLMEndpointsResponse",
    "Model",
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
