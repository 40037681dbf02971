"""API Gateway events as AWS sends them to the handlers of template.yaml (README.md here says
where their shapes come from), and `shape`, what an event looks like without its values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).parent

# Route key (as template.yaml declares it) -> the sample event of that route.
HTTP_EVENTS = {
    "POST /v1/llm/completions-async": "http_submit_async.json",
    "POST /v1/llm/completions-sync": "http_submit_sync.json",
    "GET /v1/llm/completions/{request_id}": "http_get_completion.json",
    "POST /v1/llm/completions/{request_id}/cancel": "http_cancel_completion.json",
    "POST /v1/llm/completions/{request_id}/retry": "http_retry_completion.json",
    "GET /v1/llm/completions/{request_id}/deliveries": "http_get_deliveries.json",
    "POST /v1/llm/completions/{request_id}/deliveries/redeliver": "http_redeliver.json",
    "GET /v1/webhooks/secret": "http_get_webhook_secret.json",
    "POST /v1/webhooks/secret/rotate": "http_rotate_webhook_secret.json",
    "GET /v1/llm/model-endpoints": "http_model_endpoints.json",
    "GET /v1/llm/model-endpoints/{model_endpoint_name}": "http_get_model_endpoint.json",
}
# The OpenAI-compatible routes (README "OpenAI-compatible"): sent as OpenAI's SDK sends them,
# the key as a bearer token; their errors are OpenAI's shape (tests/unit/test_openai_handlers.py).
OPENAI_EVENTS = {
    "POST /v1/completions": "http_openai_completions.json",
    "POST /v2/completions": "http_openai_completions_v2.json",
    "POST /v1/chat/completions": "http_openai_chat.json",
    "POST /v2/chat/completions": "http_openai_chat_v2.json",
    "GET /v1/models": "http_openai_models.json",
    "GET /v1/models/{model}": "http_openai_model.json",
}
# OpenAI's Batch API (README "OpenAI Batch API"): files and batches, as OpenAI's SDK sends them.
BATCH_EVENTS = {
    "POST /v1/files": "batch_upload_file.json",
    "GET /v1/files/{file_id}": "batch_get_file.json",
    "DELETE /v1/files/{file_id}": "batch_delete_file.json",
    "GET /v1/files/{file_id}/content": "batch_file_content.json",
    "POST /v1/batches": "batch_create.json",
    "GET /v1/batches": "batch_list.json",
    "GET /v1/batches/{batch_id}": "batch_get.json",
    "POST /v1/batches/{batch_id}/cancel": "batch_cancel.json",
}
WEBSOCKET_EVENTS = {
    "$connect": "ws_connect.json",
    "$disconnect": "ws_disconnect.json",
    "complete": "ws_complete.json",
    "subscribe": "ws_subscribe.json",
    "cancel": "ws_cancel.json",
    "$default": "ws_default.json",
}

# Maps whose names depend on what the client sent: only their values' shapes count.
_CLIENT_NAMED = frozenset({"headers", "multiValueHeaders"})


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of tests/events/<name>, free to change."""
    event: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return event


def shape(value: Any, *, client_named: bool = False) -> Any:
    """The keys of `value`, recursively, with the JSON type of each leaf in place of its value.

    A list is the sorted distinct shapes of its items; so is a map of client-named headers
    (under the key "*")."""
    if isinstance(value, dict):
        if client_named:
            return {"*": _distinct(value.values())}
        return {key: shape(item, client_named=key in _CLIENT_NAMED) for key, item in value.items()}
    if isinstance(value, list):
        return _distinct(value)
    return type(value).__name__


def _distinct(values: Any) -> list[Any]:
    return [json.loads(s) for s in sorted({json.dumps(shape(v), sort_keys=True) for v in values})]
