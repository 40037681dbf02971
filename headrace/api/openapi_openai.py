"""The OpenAI-compatible routes of the OpenAPI document (headrace.api.openapi): completions and
chat (also under /v2/), whole or streamed, the model list, and the Batch API's files and
batches (headrace.api.openapi_batches)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from headrace.api import openapi_batches
from headrace.api.openai_protocol import OpenAIChatRequest, OpenAICompletionRequest
from headrace.api.openai_responses import (
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    ModelCard,
    ModelList,
    OpenAIError,
)
from headrace.core import routes

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (OpenAICompletionRequest, "validation"),
    (OpenAIChatRequest, "validation"),
    (Completion, "serialization"),
    (ChatCompletion, "serialization"),
    (ChatCompletionChunk, "serialization"),
    (ModelList, "serialization"),
    (ModelCard, "serialization"),
    (OpenAIError, "serialization"),
    *openapi_batches.MODELS,
]

_ERRORS = {
    400: "A parameter is invalid, or set to a value the engine cannot honour (`param` names "
    "it); the model has no chat template (chat); or the worker refused the job (its prompt "
    "and max_tokens overflow the model's context)",
    401: "Missing or unknown API key",
    404: "Unknown model",
    409: "The job was cancelled; or the Idempotency-Key's first request is still being submitted",
    413: "The prompt (chat: the rendered messages) is over HEADRACE_MAX_PROMPT_BYTES",
    422: "The Idempotency-Key was used with a different request",
    429: "Throttled; retry with backoff",
    500: "Internal error, or the job FAILED (`request_id` names it)",
    503: "The job could not be enqueued (it is marked FAILED); retry",
    504: "The job is not done within HEADRACE_SYNC_WAIT_SECONDS (`code` request_pending: poll "
    "GET /v1/llm/completions/{request_id} with the `request_id` of the error; a streamed request "
    "has no such limit), or it passed its deadline (`code` timed_out)",
}

_NOTE = (
    "Every request is a job like the others: the answer's `id` is its request_id (GET "
    "/v1/llm/completions/{id}). Whole answers wait up to HEADRACE_SYNC_WAIT_SECONDS; "
    "`stream: true` answers OpenAI's server-sent events ending with `data: [DONE]` (on AWS at "
    "the streaming function's URL). Errors are OpenAI's `{\"error\": {...}}`; answers that "
    "must not be resent (the job exists) say `x-should-retry: false`."
)


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": _ERRORS[code],
            "content": {"application/json": {"schema": _ref(OpenAIError)}},
        }
        for code in codes
    }


def _answer(whole: type[BaseModel], chunk: type[BaseModel]) -> dict[str, Any]:
    # OpenAPI 3.1 reads an event stream's schema as each event's: `data` is a chunk as JSON
    # (or the text [DONE], the last).
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref(chunk)}
    event = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {
        "description": "The answer; with `stream: true` its chunks as server-sent events",
        "content": {
            "application/json": {"schema": _ref(whole)},
            "text/event-stream": {"schema": event},
        },
    }


def _create(operation: str, summary: str, request: type[BaseModel], answer: Any) -> Any:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "description": _NOTE,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": answer,
                **_errors(400, 401, 404, 409, 413, 422, 429, 500, 503, 504),
            },
        }
    }


def openai_paths() -> dict[str, Any]:
    completion = _answer(Completion, Completion)
    chat = _answer(ChatCompletion, ChatCompletionChunk)
    completions = ("A completion (OpenAI's completions)", OpenAICompletionRequest, completion)
    chats = ("A chat completion, with the model's chat template", OpenAIChatRequest, chat)
    return {
        routes.OPENAI_COMPLETIONS: _create("createOpenAICompletion", *completions),
        routes.V2_COMPLETIONS: _create("createOpenAICompletionV2", *completions),
        routes.OPENAI_CHAT_COMPLETIONS: _create("createChatCompletion", *chats),
        routes.V2_CHAT_COMPLETIONS: _create("createChatCompletionV2", *chats),
        routes.OPENAI_MODELS: {
            "get": {
                "operationId": "listModels",
                "summary": "The model zoo, in OpenAI's model shape",
                "responses": {
                    "200": {
                        "description": "The models",
                        "content": {"application/json": {"schema": _ref(ModelList)}},
                    },
                    **_errors(401, 429, 500),
                },
            }
        },
        routes.OPENAI_MODEL: {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model of the zoo, in OpenAI's model shape",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The model",
                        "content": {"application/json": {"schema": _ref(ModelCard)}},
                    },
                    **_errors(401, 404, 429, 500),
                },
            }
        },
        **openapi_batches.batch_paths(),
    }
