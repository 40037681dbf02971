"""The HTTP API as an OpenAPI 3.1 document, generated from the wire models.

    python -m headrace.api.openapi > openapi.json    # regenerate the committed copy

`openapi_document()` is what the local gateway serves at /openapi.json. The WebSocket API
(`complete` / `subscribe` frames, stream events) is not an OpenAPI thing; see the README.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from headrace.api import openapi_openai, openapi_webhooks
from headrace.core import routes
from headrace.core.contracts import (
    CompletionRequest,
    CompletionSyncResponse,
    JobView,
    ModelEndpoint,
    ModelEndpointsResponse,
    StreamEvent,
    SubmitResponse,
)
from headrace.core.control import CancelResponse


class ErrorResponse(BaseModel):
    """Every error Headrace answers itself. (API Gateway's own errors are {"message": ...}.)"""

    detail: str = Field(description="What went wrong; a bad field's detail starts with its name")
    request_id: str | None = Field(
        default=None, description="Set when a job was created (a FAILED sync completion)"
    )


_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (CompletionRequest, "validation"),
    (SubmitResponse, "serialization"),
    (CompletionSyncResponse, "serialization"),
    (JobView, "serialization"),
    (CancelResponse, "serialization"),
    (ModelEndpointsResponse, "serialization"),
    (ModelEndpoint, "serialization"),
    (ErrorResponse, "serialization"),
    (StreamEvent, "serialization"),
    *openapi_webhooks.MODELS,
    *openapi_openai.MODELS,
]

# Served by the local gateway beside the template's routes (headrace.dev.sse); on AWS a
# buffered Lambda cannot stream, so there the WebSocket API streams instead.

_ERRORS = {
    400: "A field is invalid or not supported, the detail naming it; or (sync route) the worker"
    " refused the job: its prompt and max_new_tokens overflow the model's context",
    401: "Missing or unknown API key",
    404: "Unknown model, unknown request, or another key's request",
    409: "Idempotency-Key: the key's first request is still being submitted; retry shortly",
    413: "The prompt is over HEADRACE_MAX_PROMPT_BYTES, or the request over 256 KB as a job",
    422: "The body is not JSON; or the Idempotency-Key was used with a different request",
    429: "Throttled; retry with backoff",
    500: "Internal error, or the job FAILED (sync route)",
    503: "The job could not be enqueued (it is marked FAILED); retry",
}


_MODELS_NOTE = (
    "LLM Engine's model-endpoint fields where they hold true: `inference_framework` is "
    "`ctranslate2`, `source` and the deployment details are null. The LLM Engine client's "
    "Model.list()/Model.get() reject these answers (their framework enum has no CTranslate2); "
    "use Headrace's client."
)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(ErrorResponse, _ERRORS[code]) for code in codes}


_MODEL_QUERY = {
    "name": "model_endpoint_name",
    "in": "query",
    "required": False,
    "description": "The model (LLM Engine's name for it); or `model` in the body",
    "schema": {"type": "string"},
}


def _event_stream(model: type[BaseModel], description: str) -> dict[str, Any]:
    # OpenAPI 3.1 reads the `schema` of an event stream as that of each event: here its `data`
    # is the model as JSON.
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref(model)}
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": data, "event": {"type": "string"}},
    }
    return {"description": description, "content": {"text/event-stream": {"schema": event}}}


# headrace.api.idempotency.parse_key's rule, as a JSON Schema pattern.
_KEY_PATTERN = r'^(?:[!#-\[\]-~]{1,255}|"[!#-\[\]-~]{1,255}")$'
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Submit at most once: a repeat with the same key (per API key) and the same "
    "request within HEADRACE_IDEMPOTENCY_RETENTION_SECONDS (24 h) answers the first request's "
    "job with the first answer's status code (async: 202, its request_id and status now; sync: "
    "its result; stream: its events from the first); with a different request, 422; while the "
    "first is still being submitted, 409. 1 to 255 visible ASCII characters "
    'without `"` or `\\` (a UUID, say), optionally in double quotes; anything else is a 400.',
    "schema": {"type": "string", "pattern": _KEY_PATTERN},
}


def _submit(summary: str, description: str, answers: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "parameters": [_MODEL_QUERY, _IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(CompletionRequest)}},
        },
        "responses": {**answers, **_errors(400, 401, 404, 409, 413, 422, 429, 500, 503)},
    }


def _paths() -> dict[str, Any]:
    queued = _json(SubmitResponse, "Queued: poll GET /v1/llm/completions/{request_id}")
    return {
        routes.COMPLETIONS_ASYNC: {
            "post": _submit(
                "Submit a completion",
                "Validate, record and enqueue the job; answer at once with its request_id.",
                {"202": queued},
            )
            | {"operationId": "submitCompletion"}
        },
        routes.COMPLETIONS_SYNC: {
            "post": _submit(
                "Complete and wait",
                "Submit, then wait up to HEADRACE_SYNC_WAIT_SECONDS for the result; 202 with "
                "the request_id to poll if it is not done by then.",
                {
                    "200": _json(CompletionSyncResponse, "The completion"),
                    "202": _json(SubmitResponse, "Not done within the wait: poll it"),
                },
            )
            | {"operationId": "createCompletionSync"}
        },
        routes.COMPLETIONS_STREAM: {
            "post": _submit(
                "Complete and stream (server-sent events)",
                "LLM Engine's streaming route: data-only server-sent events, each `data: "
                "<StreamEvent JSON>`; the last has `output.finished` true, or is one error event "
                "if the job failed after streaming began. Input errors are plain JSON errors "
                "before any event. Served by the local gateway only; on AWS stream over the "
                "WebSocket API.",
                {"200": _event_stream(StreamEvent, "The job's stream events")},
            )
            | {"operationId": "createCompletionStream"}
        },
        routes.COMPLETION: {
            "get": {
                "operationId": "getCompletion",
                "summary": "A job's state and result",
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(
                        JobView,
                        "The job: output when SUCCEEDED (partial when CANCELLED or TIMED_OUT),"
                        " error when FAILED",
                    ),
                    **_errors(401, 404, 429, 500),
                },
            }
        },
        routes.COMPLETION_CANCEL: {"post": _cancel()},
        routes.COMPLETION_RETRY: {"post": _retry()},
        **_model_paths(),
        **openapi_webhooks.webhook_paths(_json, _errors, lambda text: _json(ErrorResponse, text)),
        **openapi_openai.openai_paths(),
    }


def _cancel() -> dict[str, Any]:
    return {
        "operationId": "cancelCompletion",
        "summary": "Cancel a job",
        "description": "A job that has not started is CANCELLED at once (200). A running one "
        "(202) stops within HEADRACE_CANCEL_CHECK_MS plus one decode step and ends CANCELLED "
        "with its partial text, unless it finished first (then SUCCEEDED): a job has one final "
        "state, whatever the race.",
        "parameters": [
            {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": _json(CancelResponse, "Cancelled now: the job had not started"),
            "202": _json(CancelResponse, "Accepted: the job is stopping (`cancelling` true)"),
            **_errors(401, 404),
            "409": _json(ErrorResponse, "The job is final already; the detail names its status"),
            **_errors(429, 500),
        },
    }


def _retry() -> dict[str, Any]:
    return {
        "operationId": "retryCompletion",
        "summary": "Queue a FAILED or TIMED_OUT job again",
        "description": "The same request_id goes back to QUEUED with a new allowance of "
        "HEADRACE_MAX_ATTEMPTS attempts (its attempts and attempt_history carry on), its "
        "deadline counted from now, and a new stream from seq 0 (subscribe again).",
        "parameters": [
            {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "202": _json(SubmitResponse, "Queued again"),
            **_errors(401, 404),
            "409": _json(ErrorResponse, "Not FAILED or TIMED_OUT; the detail names its status"),
            **_errors(429, 500, 503),
        },
    }


def _model_paths() -> dict[str, Any]:
    return {
        routes.MODEL_ENDPOINTS: {
            "get": {
                "operationId": "listModelEndpoints",
                "summary": "The model zoo and whether a worker serves each model",
                "description": _MODELS_NOTE,
                "responses": {
                    "200": _json(ModelEndpointsResponse, "The models"),
                    **_errors(401, 429, 500),
                },
            }
        },
        routes.MODEL_ENDPOINT: {
            "get": {
                "operationId": "getModelEndpoint",
                "summary": "One model of the zoo and whether a worker serves it",
                "description": _MODELS_NOTE,
                "parameters": [
                    {
                        "name": "model_endpoint_name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json(ModelEndpoint, "The model"),
                    **_errors(401),
                    "404": _json(ErrorResponse, "No model of that name in the zoo"),
                    **_errors(429, 500),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    _, schemas = models_json_schema(_MODELS, ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Headrace",
            "version": version("headrace"),
            "description": "Queue-driven LLM completions with the request and response shapes "
            "of Scale's LLM Engine, and OpenAI's API beside them. Send the API key as "
            "`x-api-key` (or as the user name of HTTP basic auth, or as a bearer token). Errors "
            'are `{"detail": ...}`, on the OpenAI-compatible routes OpenAI\'s `{"error": ...}`.',
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "the local stack (make dev)"}],
        "security": [{"ApiKeyHeader": []}, {"BasicAuth": []}, {"BearerAuth": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "BasicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The API key as the user name (the LLM Engine client)",
                },
                "BearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The API key as a bearer token (OpenAI's SDKs)",
                },
            },
        },
    }


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
