"""The HTTP API's paths: part of the wire contract, shared by the server, the docs and the client.

template.yaml declares the same paths for API Gateway; a test checks the two agree.
"""

from __future__ import annotations

COMPLETIONS_ASYNC = "/v1/llm/completions-async"
COMPLETIONS_SYNC = "/v1/llm/completions-sync"
COMPLETIONS_STREAM = "/v1/llm/completions-stream"
COMPLETION = "/v1/llm/completions/{request_id}"
COMPLETION_CANCEL = "/v1/llm/completions/{request_id}/cancel"
COMPLETION_RETRY = "/v1/llm/completions/{request_id}/retry"
MODEL_ENDPOINTS = "/v1/llm/model-endpoints"
MODEL_ENDPOINT = "/v1/llm/model-endpoints/{model_endpoint_name}"
OPENAPI = "/openapi.json"
