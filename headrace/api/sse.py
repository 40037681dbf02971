"""LLM Engine's `POST /v1/llm/completions-stream`: submit, then the job's stream as SSE frames.

A buffered Lambda cannot stream a response, so a streaming server (the local gateway; on AWS a
response-streaming function) runs this: `start` submits like the async route, `frames` follows
the stream the worker stores and yields `data: {...}` frames until the last event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from headrace.api import completions, idempotency
from headrace.api.auth import api_key_from_headers, authenticate
from headrace.api.services import ApiServices
from headrace.api.websocket import event_without_stream
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import StreamEvent, parse_completion_request
from headrace.core.errors import HeadraceError
from headrace.core.tables import streams as stream_table


@dataclass(frozen=True)
class OpenedStream:
    owner: str
    request_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-request-id": self.request_id,
        }


async def start(
    services: ApiServices, *, headers: Mapping[str, str], body: bytes, query_model: str | None
) -> OpenedStream:
    """Authenticate, validate and submit; raises HeadraceError before anything is streamed."""
    owner = await asyncio.to_thread(authenticate, services, api_key_from_headers(headers))
    key = idempotency.key_from_headers(headers)
    request = parse_completion_request(body)
    model = completions.resolve_model(services, request, query_model)
    # A repeated Idempotency-Key streams the first request's job, from its first event.
    submitted = await asyncio.to_thread(
        idempotency.submit, services, owner=owner, request=request, model=model, key=key
    )
    return OpenedStream(owner=owner, request_id=submitted.request_id)


async def frames(
    services: ApiServices, opened: OpenedStream, *, timeout_seconds: float = 900.0
) -> AsyncIterator[bytes]:
    """Every event as one SSE frame; a failure after streaming began is one error event (and a
    stream still going after `timeout_seconds` ends with a 504 one)."""
    try:
        async for event in follow_stored(
            services,
            owner=opened.owner,
            request_id=opened.request_id,
            timeout_seconds=timeout_seconds,
        ):
            line = json.dumps(event.model_dump(mode="json"), ensure_ascii=False)
            yield f"data: {line}\n\n".encode()
    except HeadraceError as e:
        event = StreamEvent.failure(opened.request_id, e.status_code, e.detail)
        yield f"data: {event.model_dump_json()}\n\n".encode()


async def follow_stored(
    services: ApiServices,
    *,
    owner: str,
    request_id: str,
    from_seq: int = 0,
    poll_seconds: float = 0.03,
    timeout_seconds: float = 900.0,
) -> AsyncIterator[StreamEvent]:
    """A job's stream as stored by its worker, from `from_seq` until the last event.

    Polls the stored chunks: this is what serves clients that cannot hold a WebSocket (SSE).
    """
    table = services.settings.table_name
    deadline = services.clock() + timeout_seconds
    next_seq = from_seq
    checked_job_at = services.clock()
    while True:
        answer = await asyncio.to_thread(
            call_aws,
            services.dynamodb.query,
            **stream_table.query_chunks(table, request_id, from_seq=next_seq),
        )
        for item in answer.get("Items", []):
            event = stream_table.StoredChunk.from_item(item).event
            next_seq += 1
            yield event
            if event.is_last:
                return
        now = services.clock()
        if now > deadline:
            yield StreamEvent.failure(
                request_id, 504, "stream timed out; subscribe again to resume"
            )
            return
        if now - checked_job_at > 1.0:
            # A job can end without streaming (it failed before decoding).
            checked_job_at = now
            record = await asyncio.to_thread(
                completions.get_job, services, owner=owner, request_id=request_id
            )
            if record.status.is_final and next_seq == 0:
                yield event_without_stream(record)
                return
        await asyncio.sleep(poll_seconds)
