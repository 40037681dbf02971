"""Batch files: an upload (OpenAI's multipart form, `purpose=batch` and `file`), validated line by
line and kept in the batch files bucket; a file's metadata and content; its deletion."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from headrace.api import batch_lines
from headrace.api.batch_protocol import FileDeleted, FileObject
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import InvalidRequest, NotFound, PayloadTooLarge
from headrace.core.tables import batches as batch_table
from headrace.core.tables.batches import FileRecord

MAX_FILENAME_LENGTH = 255
JSONL = "application/jsonl"


@dataclass(frozen=True)
class Upload:
    purpose: str
    filename: str
    content: bytes


@dataclass(frozen=True)
class Content:
    """A file's content, or (too big to answer in one response) where to fetch it."""

    data: bytes | None
    redirect: str | None = None


def parse_form(content_type: str | None, body: bytes) -> Upload:
    """OpenAI's `POST /v1/files` form: multipart/form-data with `purpose` and `file`."""
    if not content_type or not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest("body: multipart/form-data with `purpose` and `file` expected")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if isinstance(message, EmailMessage) and message.is_multipart():
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
    if "file" not in fields:
        raise InvalidRequest("file: field required")
    if "purpose" not in fields:
        raise InvalidRequest("purpose: field required")
    purpose = fields["purpose"][1].decode(errors="replace")
    filename, content = fields["file"]
    return Upload(purpose, (filename or "input.jsonl")[:MAX_FILENAME_LENGTH], content)


def create(services: ApiServices, *, owner: str, upload: Upload) -> FileObject:
    """Validate every line (as its route would the request), then store the file."""
    settings = services.settings
    if upload.purpose != "batch":
        raise InvalidRequest(f"purpose: {upload.purpose!r} is not supported here: only 'batch'")
    if len(upload.content) > settings.batch_file_max_bytes:
        raise PayloadTooLarge(
            f"file: {len(upload.content)} bytes exceed the limit of"
            f" {settings.batch_file_max_bytes} (split the batch into several files)"
        )
    lines = batch_lines.parse_file(services, upload.content)
    if not lines:
        raise InvalidRequest("file: no request lines")
    urls = tuple(sorted({_url(line.job.kind) for line in lines}))
    now = services.clock()
    record = FileRecord(
        file_id=batch_table.new_id("file-", now),
        owner=owner,
        filename=upload.filename,
        purpose="batch",
        size=len(upload.content),
        lines=len(lines),
        created_at=now,
        expires_at=int(now) + settings.batch_retention_seconds,
        urls=urls,
    )
    store(services, record, upload.content)
    return view(record)


def _url(kind: str) -> str:
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def store(services: ApiServices, record: FileRecord, content: bytes) -> None:
    """The content first, then the record: a record always has its content."""
    call_aws(
        services.s3.put_object,
        Bucket=services.settings.batch_files_bucket,
        Key=batch_table.object_key(record.file_id),
        Body=content,
        ContentType=JSONL,
    )
    call_aws(
        services.dynamodb.put_item,
        TableName=services.settings.table_name,
        Item=record.item(),
    )


def derived_id(batch_id: str, role: str) -> str:
    """The id of a batch's output or error file: the same however often it is finalized."""
    return "file-" + hashlib.sha256(f"{batch_id}/{role}".encode()).hexdigest()[:32]


def get_record(services: ApiServices, *, owner: str, file_id: str) -> FileRecord:
    found = call_aws(
        services.dynamodb.get_item,
        **batch_table.get(services.settings.table_name, batch_table.file_key(owner, file_id)),
    )
    item = found.get("Item")
    if not item or int(item["expires_at"]["N"]) < services.clock():
        raise NotFound(f"file_id: no file {file_id!r}")
    return FileRecord.from_item(item)


def view(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.file_id,
        bytes=record.size,
        created_at=int(record.created_at),
        expires_at=record.expires_at,
        filename=record.filename,
        purpose="batch_output" if record.purpose == "batch_output" else "batch",
    )


def read(services: ApiServices, file_id: str) -> bytes:
    found = call_aws(
        services.s3.get_object,
        Bucket=services.settings.batch_files_bucket,
        Key=batch_table.object_key(file_id),
    )
    return bytes(found["Body"].read())


def content(services: ApiServices, *, owner: str, file_id: str) -> Content:
    record = get_record(services, owner=owner, file_id=file_id)
    if record.size <= services.settings.batch_content_inline_bytes:
        return Content(read(services, file_id))
    url = services.s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": services.settings.batch_files_bucket,
            "Key": batch_table.object_key(file_id),
        },
        ExpiresIn=300,
    )
    return Content(None, redirect=str(url))


def delete(services: ApiServices, *, owner: str, file_id: str) -> FileDeleted:
    get_record(services, owner=owner, file_id=file_id)
    call_aws(
        services.s3.delete_object,
        Bucket=services.settings.batch_files_bucket,
        Key=batch_table.object_key(file_id),
    )
    call_aws(
        services.dynamodb.delete_item,
        TableName=services.settings.table_name,
        Key=batch_table.file_key(owner, file_id),
    )
    return FileDeleted(id=file_id, deleted=True)
