"""OpenAI's files for the Batch API: POST /v1/files (multipart: `purpose=batch`, `file`),
GET /v1/files/{file_id}, GET /v1/files/{file_id}/content, DELETE /v1/files/{file_id}."""

from __future__ import annotations

from typing import Any

from handlers.http import HttpApiEvent
from handlers.openai_http import openai_endpoint
from headrace.api import batch_files
from headrace.api.openai_serving import Answer
from headrace.api.services import ApiServices


def _file_id(event: HttpApiEvent) -> str:
    return (event.path_parameters or {}).get("file_id", "")


@openai_endpoint
def handle_create(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    upload = batch_files.parse_form(event.headers.get("content-type"), event.body_bytes())
    created = batch_files.create(services, owner=owner, upload=upload)
    return Answer(200, created.model_dump(mode="json"))


@openai_endpoint
def handle_get(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    record = batch_files.get_record(services, owner=owner, file_id=_file_id(event))
    return Answer(200, batch_files.view(record).model_dump(mode="json"))


@openai_endpoint
def handle_content(event: HttpApiEvent, services: ApiServices, owner: str) -> dict[str, Any]:
    found = batch_files.content(services, owner=owner, file_id=_file_id(event))
    if found.redirect is not None:
        return {"statusCode": 302, "headers": {"location": found.redirect}, "body": ""}
    assert found.data is not None
    return {
        "statusCode": 200,
        "headers": {"content-type": batch_files.JSONL},
        "body": found.data.decode(),
    }


@openai_endpoint
def handle_delete(event: HttpApiEvent, services: ApiServices, owner: str) -> Answer:
    deleted = batch_files.delete(services, owner=owner, file_id=_file_id(event))
    return Answer(200, deleted.model_dump(mode="json"))
