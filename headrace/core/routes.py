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
COMPLETION_DELIVERIES = "/v1/llm/completions/{request_id}/deliveries"
COMPLETION_REDELIVER = "/v1/llm/completions/{request_id}/deliveries/redeliver"
WEBHOOK_SECRET = "/v1/webhooks/secret"
WEBHOOK_SECRET_ROTATE = "/v1/webhooks/secret/rotate"
# OpenAI's API (README "OpenAI-compatible"): completions and chat also under LLM Engine's /v2/.
OPENAI_COMPLETIONS = "/v1/completions"
OPENAI_CHAT_COMPLETIONS = "/v1/chat/completions"
OPENAI_MODELS = "/v1/models"
OPENAI_MODEL = "/v1/models/{model}"
V2_COMPLETIONS = "/v2/completions"
V2_CHAT_COMPLETIONS = "/v2/chat/completions"
# OpenAI's Batch API (README "OpenAI Batch API"): input and output files, and batches of jobs.
OPENAI_FILES = "/v1/files"
OPENAI_FILE = "/v1/files/{file_id}"
OPENAI_FILE_CONTENT = "/v1/files/{file_id}/content"
OPENAI_BATCHES = "/v1/batches"
OPENAI_BATCH = "/v1/batches/{batch_id}"
OPENAI_BATCH_CANCEL = "/v1/batches/{batch_id}/cancel"
