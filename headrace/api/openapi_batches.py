"""OpenAI's Batch API in the OpenAPI document (headrace.api.openapi_openai): files and batches."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from headrace.api.batch_protocol import (
    Batch,
    BatchCreateRequest,
    BatchList,
    FileDeleted,
    FileObject,
    OutputLine,
)
from headrace.api.openai_responses import OpenAIError
from headrace.core import routes

MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (BatchCreateRequest, "validation"),
    (Batch, "serialization"),
    (BatchList, "serialization"),
    (FileObject, "serialization"),
    (FileDeleted, "serialization"),
    (OutputLine, "serialization"),
]

_ERRORS = {
    400: "A parameter is invalid; for an upload, the first line at fault (`line N: field: "
    "reason`: JSON, custom_id unique, method POST, url, and the body as its route validates it)",
    401: "Missing or unknown API key",
    404: "No such file or batch for this key (another key's answers the same)",
    409: "The batch can no longer be cancelled (it is final)",
    413: "The file is over HEADRACE_BATCH_FILE_MAX_BYTES (4 MiB), or a line's prompt over the "
    "prompt limit",
    429: "Throttled; retry with backoff",
    500: "Internal error",
    503: "A dependency failed; retry",
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ERRORS[code], OpenAIError) for code in codes}


def _path(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]


def _operation(operation: str, summary: str, answer: dict[str, Any], *codes: int) -> Any:
    return {
        "operationId": operation,
        "summary": summary,
        "responses": {"200": answer, **_errors(401, 429, 500, 503, *codes)},
    }


_UPLOAD = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["purpose", "file"],
                "properties": {
                    "purpose": {"type": "string", "enum": ["batch"]},
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "JSONL: one request a line, `{custom_id, method: POST, "
                        "url, body}`",
                    },
                },
            }
        }
    },
}


def batch_paths() -> dict[str, Any]:
    file_answer = _json("The file", FileObject)
    batch_answer = _json("The batch", Batch)
    content = {
        "description": "The file's JSONL (output and error files: one OutputLine a line)",
        "content": {"application/jsonl": {"schema": {"type": "string"}}},
    }
    return {
        routes.OPENAI_FILES: {
            "post": {
                **_operation("createFile", "Upload a batch input file", file_answer, 400, 413),
                "requestBody": _UPLOAD,
            }
        },
        routes.OPENAI_FILE: {
            "get": {
                **_operation("retrieveFile", "A file's metadata", file_answer, 404),
                "parameters": _path("file_id"),
            },
            "delete": {
                **_operation("deleteFile", "Delete a file", _json("Deleted", FileDeleted), 404),
                "parameters": _path("file_id"),
            },
        },
        routes.OPENAI_FILE_CONTENT: {
            "get": {
                **_operation("downloadFile", "A file's content", content, 404),
                "description": "Over HEADRACE_BATCH_CONTENT_INLINE_BYTES: a 302 to a presigned "
                "S3 URL (OpenAI's SDKs follow it)",
                "parameters": _path("file_id"),
            }
        },
        routes.OPENAI_BATCHES: {
            "post": {
                **_operation("createBatch", "Create a batch", batch_answer, 400, 404),
                "description": "One job per line, on the batch lane, made behind the API: the "
                "batch answers at once (validating), request_counts grow as its jobs end",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(BatchCreateRequest)}},
                },
            },
            "get": {
                **_operation(
                    "listBatches",
                    "The key's batches, newest first",
                    _json("A page of batches", BatchList),
                    400,
                ),
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
            },
        },
        routes.OPENAI_BATCH: {
            "get": {
                **_operation("retrieveBatch", "A batch and its progress", batch_answer, 404),
                "parameters": _path("batch_id"),
            }
        },
        routes.OPENAI_BATCH_CANCEL: {
            "post": {
                **_operation("cancelBatch", "Cancel a batch", batch_answer, 404, 409),
                "description": "cancelling at once; its jobs are cancelled behind the API, "
                "then it is cancelled with the output of the jobs that had finished",
                "parameters": _path("batch_id"),
            }
        },
    }
