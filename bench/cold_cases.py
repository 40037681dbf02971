"""What the cold-start benchmark sends each Lambda handler of template.yaml: a real API Gateway
event for its route (built by the local gateway's own code), and the first AWS call the handler
makes, which the boto3 baseline makes too.

A handler of the template without a case here is an error, so a new route is not left out.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from headrace.core import routes
from headrace.core.contracts import CompletionRequest
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.dev.apigw import build_event, forwarding_headers, new_request_id
from headrace.dev.routes import RouteTable
from headrace.dev.ws_events import (
    ConnectionInfo,
    build_connect_event,
    build_disconnect_event,
    build_message_event,
    connect_headers,
    new_connection_id,
)
from infra.template import http_routes, websocket_routes

SOURCE_IP = "127.0.0.1"
USER_AGENT = "bench.cold_start"
PROMPT = {"prompt": "The first request after a cold start", "max_new_tokens": 8}
CHAT = [{"role": "user", "content": "The first chat after a cold start"}]


@dataclass(frozen=True)
class StackFacts:
    """What the events need to know of the running local stack."""

    host: str  # the gateway's host:port, as the Host header carries it
    api_key: str
    table_name: str
    model: str
    management_url: str  # where handlers post to connections (recorded with each connection)
    job_id: str  # a queued job of the API key: what status and subscribe ask about
    dynamodb: Any  # this process's client: records the connections the events come from
    route_table: RouteTable
    stage: str

    @property
    def port(self) -> int:
        return int(self.host.rpartition(":")[2])


@dataclass(frozen=True)
class Request:
    event: dict[str, Any]
    # {"service", "operation", "params"} of the handler's first AWS call; None: it makes none.
    first_call: dict[str, Any] | None


@dataclass(frozen=True)
class Case:
    handler: str  # "handlers.<module>.<function>", as template.yaml names it
    route: str  # "POST /v1/llm/completions-async" or a WebSocket route key
    expected_status: int
    build: Callable[[StackFacts], Request]
    env: Mapping[str, str] = field(default_factory=dict)  # settings on top of the stack's


def _api_key_lookup(facts: StackFacts) -> dict[str, Any]:
    key = job_table.api_key_key(facts.api_key)
    return {
        "service": "dynamodb",
        "operation": "get_item",
        "params": {"TableName": facts.table_name, "Key": key},
    }


def _http(facts: StackFacts, method: str, path: str, body: dict[str, Any] | None = None) -> Request:
    match = facts.route_table.match(method, path)
    if match is None:
        raise ValueError(f"template.yaml has no route for {method} {path}")
    data = json.dumps(body).encode() if body is not None else b""
    headers = [
        ("host", facts.host),
        ("user-agent", USER_AGENT),
        ("accept", "application/json"),
        ("x-api-key", facts.api_key),
    ]
    if data:
        headers.append(("content-type", "application/json"))
    event = build_event(
        match=match,
        method=method,
        path=path,
        raw_query="",
        headers=forwarding_headers(headers, source_ip=SOURCE_IP, port=facts.port, scheme="http"),
        body=data,
        source_ip=SOURCE_IP,
        request_id=new_request_id(),
        now=datetime.now(UTC),
    )
    return Request(event, _api_key_lookup(facts))


def _openai(facts: StackFacts, **request: Any) -> dict[str, Any]:
    return {"model": facts.model, "max_tokens": 8, **request}


def _connection(facts: StackFacts, *, recorded: bool) -> ConnectionInfo:
    """A new connection; `recorded`: as its $connect left it in the table."""
    info = ConnectionInfo(
        connection_id=new_connection_id(),
        stage=facts.stage,
        domain_name=facts.host,
        source_ip=SOURCE_IP,
        user_agent=USER_AGENT,
        connected_at=datetime.now(UTC),
    )
    if recorded:
        owner = job_table.hash_api_key(facts.api_key)
        facts.dynamodb.put_item(
            **connection_table.put_connection(
                facts.table_name,
                connection_id=info.connection_id,
                owner=owner,
                endpoint=facts.management_url,
                now=time.time(),
            )
        )
    return info


def _connection_lookup(facts: StackFacts, info: ConnectionInfo) -> dict[str, Any]:
    key = connection_table.connection_key(info.connection_id)
    params = {"TableName": facts.table_name, "Key": key, "ConsistentRead": True}
    return {"service": "dynamodb", "operation": "get_item", "params": params}


def _connect(facts: StackFacts) -> Request:
    info = _connection(facts, recorded=False)
    upgrade = [
        ("Host", facts.host),
        ("User-Agent", USER_AGENT),
        ("x-api-key", facts.api_key),
        ("Sec-WebSocket-Key", base64.b64encode(secrets.token_bytes(16)).decode()),
        ("Sec-WebSocket-Version", "13"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
    ]
    headers = connect_headers(upgrade, source_ip=SOURCE_IP, port=facts.port, scheme="http")
    event = build_connect_event(
        info, headers=headers, query=[], request_id=new_request_id(), now=datetime.now(UTC)
    )
    return Request(event, _api_key_lookup(facts))


def _disconnect(facts: StackFacts) -> Request:
    info = _connection(facts, recorded=True)
    event = build_disconnect_event(
        info,
        status_code=1000,
        reason="",
        request_id=new_request_id(),
        now=datetime.now(UTC),
    )
    query = connection_table.query_connection_items(facts.table_name, info.connection_id)
    return Request(event, {"service": "dynamodb", "operation": "query", "params": query})


def _message(facts: StackFacts, route_key: str, frame: dict[str, Any]) -> Request:
    info = _connection(facts, recorded=route_key != "$default")
    event = build_message_event(
        info,
        route_key=route_key,
        data=json.dumps(frame),
        request_id=new_request_id(),
        now=datetime.now(UTC),
    )
    first_call = _connection_lookup(facts, info) if route_key != "$default" else None
    return Request(event, first_call)


def _queued_job(facts: StackFacts) -> str:
    """A job of the API key recorded QUEUED (no message): what a cancel cancels at once."""
    request_id = str(uuid.uuid4())
    facts.dynamodb.put_item(
        **job_table.put_new_job(
            facts.table_name,
            request_id=request_id,
            owner=job_table.hash_api_key(facts.api_key),
            model=facts.model,
            request=CompletionRequest(**PROMPT),
            now=time.time(),
            ttl_seconds=3600,
        )
    )
    return request_id


def _failed_job(facts: StackFacts) -> str:
    """A job of the API key recorded FAILED: what a retry queues again."""
    request_id = _queued_job(facts)
    facts.dynamodb.update_item(
        **job_table.fail_queued_job(
            facts.table_name, request_id, reason="for the cold start", now=time.time()
        )
    )
    return request_id


NO_FILE = "file-0123456789abcdef0123456789abcdef"
NO_BATCH = "batch_01a23a7a36d07d047ca71bf590a7956e"
NEW_BATCH = {"input_file_id": NO_FILE, "endpoint": "/v1/completions", "completion_window": "24h"}


def _batch(
    handler: str,
    method: str,
    route: str,
    status: int,
    body: dict[str, Any] | None = None,
    **path: str,
) -> Case:
    return Case(
        f"handlers.{handler}",
        f"{method} {route}",
        status,
        lambda f: _http(f, method, route.format(**path), body),
    )


CASES = [
    Case(
        "handlers.submit.handle_async",
        f"POST {routes.COMPLETIONS_ASYNC}",
        202,
        lambda f: _http(f, "POST", routes.COMPLETIONS_ASYNC, {"model": f.model, **PROMPT}),
    ),
    Case(
        "handlers.submit.handle_sync",
        f"POST {routes.COMPLETIONS_SYNC}",
        202,
        lambda f: _http(f, "POST", routes.COMPLETIONS_SYNC, {"model": f.model, **PROMPT}),
        # No worker runs: waiting for the job would measure the wait, not the cold start. With
        # no wait the handler submits, reads the job once and answers 202.
        {"HEADRACE_SYNC_WAIT_SECONDS": "0"},
    ),
    Case(
        "handlers.status.handler",
        f"GET {routes.COMPLETION}",
        200,
        lambda f: _http(f, "GET", routes.COMPLETION.format(request_id=f.job_id)),
    ),
    Case(
        "handlers.cancel.handler",
        f"POST {routes.COMPLETION_CANCEL}",
        200,
        lambda f: _http(f, "POST", routes.COMPLETION_CANCEL.format(request_id=_queued_job(f))),
    ),
    Case(
        "handlers.retry.handler",
        f"POST {routes.COMPLETION_RETRY}",
        202,
        lambda f: _http(f, "POST", routes.COMPLETION_RETRY.format(request_id=_failed_job(f))),
    ),
    Case(
        "handlers.model_endpoints.handler",
        f"GET {routes.MODEL_ENDPOINTS}",
        200,
        lambda f: _http(f, "GET", routes.MODEL_ENDPOINTS),
    ),
    Case(
        "handlers.model_endpoints.handle_get",
        f"GET {routes.MODEL_ENDPOINT}",
        200,
        lambda f: _http(f, "GET", routes.MODEL_ENDPOINT.format(model_endpoint_name=f.model)),
    ),
    Case(
        "handlers.webhooks.list_deliveries",
        f"GET {routes.COMPLETION_DELIVERIES}",
        200,
        lambda f: _http(f, "GET", routes.COMPLETION_DELIVERIES.format(request_id=f.job_id)),
    ),
    Case(
        "handlers.webhooks.redeliver",
        f"POST {routes.COMPLETION_REDELIVER}",
        409,  # a queued job has no event for a callback yet: answered after the reads
        lambda f: _http(f, "POST", routes.COMPLETION_REDELIVER.format(request_id=f.job_id)),
    ),
    Case(
        "handlers.webhooks.get_secret",
        f"GET {routes.WEBHOOK_SECRET}",
        200,
        lambda f: _http(f, "GET", routes.WEBHOOK_SECRET),
    ),
    Case(
        "handlers.webhooks.rotate_secret",
        f"POST {routes.WEBHOOK_SECRET_ROTATE}",
        200,
        lambda f: _http(f, "POST", routes.WEBHOOK_SECRET_ROTATE),
    ),
    Case(
        "handlers.openai_completions.handler",
        f"POST {routes.OPENAI_COMPLETIONS}",
        504,  # the job is not done within no wait: its request_id comes in OpenAI's error
        lambda f: _http(f, "POST", routes.OPENAI_COMPLETIONS, _openai(f, prompt=PROMPT["prompt"])),
        {"HEADRACE_SYNC_WAIT_SECONDS": "0"},
    ),
    Case(
        "handlers.openai_chat.handler",
        f"POST {routes.OPENAI_CHAT_COMPLETIONS}",
        504,  # after reading the model's chat template, a first time per process
        lambda f: _http(f, "POST", routes.OPENAI_CHAT_COMPLETIONS, _openai(f, messages=CHAT)),
        {"HEADRACE_SYNC_WAIT_SECONDS": "0"},
    ),
    Case(
        "handlers.openai_models.handler",
        f"GET {routes.OPENAI_MODELS}",
        200,
        lambda f: _http(f, "GET", routes.OPENAI_MODELS),
    ),
    Case(
        "handlers.openai_models.handle_get",
        f"GET {routes.OPENAI_MODEL}",
        200,
        lambda f: _http(f, "GET", routes.OPENAI_MODEL.format(model=f.model)),
    ),
    # The batch routes answer after their reads: no such file or batch (404), a body that is
    # not the upload form (400), an input file that is not there (400).
    _batch("batch_files.handle_create", "POST", routes.OPENAI_FILES, 400, {"purpose": "batch"}),
    _batch("batch_files.handle_get", "GET", routes.OPENAI_FILE, 404, file_id=NO_FILE),
    _batch("batch_files.handle_delete", "DELETE", routes.OPENAI_FILE, 404, file_id=NO_FILE),
    _batch("batch_files.handle_content", "GET", routes.OPENAI_FILE_CONTENT, 404, file_id=NO_FILE),
    _batch("batches.handle_create", "POST", routes.OPENAI_BATCHES, 400, NEW_BATCH),
    _batch("batches.handle_list", "GET", routes.OPENAI_BATCHES, 200),
    _batch("batches.handle_get", "GET", routes.OPENAI_BATCH, 404, batch_id=NO_BATCH),
    _batch("batches.handle_cancel", "POST", routes.OPENAI_BATCH_CANCEL, 404, batch_id=NO_BATCH),
    Case("handlers.websocket.connect", "$connect", 200, _connect),
    Case("handlers.websocket.disconnect", "$disconnect", 200, _disconnect),
    Case(
        "handlers.websocket.complete",
        "complete",
        200,
        lambda f: _message(f, "complete", {"action": "complete", "model": f.model, **PROMPT}),
    ),
    Case(
        "handlers.websocket.subscribe",
        "subscribe",
        200,
        lambda f: _message(
            f, "subscribe", {"action": "subscribe", "request_id": f.job_id, "from_seq": 0}
        ),
    ),
    Case(
        "handlers.websocket.cancel",
        "cancel",
        200,
        lambda f: _message(f, "cancel", {"action": "cancel", "request_id": _queued_job(f)}),
    ),
    Case(
        "handlers.websocket.default",
        "$default",
        400,
        lambda f: _message(f, "$default", {"action": "no-such-action"}),
    ),
]


def cases_for(template: dict[str, Any]) -> list[Case]:
    """The cases of every handler the template declares, checked against its routes (a handler
    may serve several: OpenAI's routes and their /v2/ twins)."""
    declared: dict[str, list[str]] = {}
    for route in http_routes(template):
        declared.setdefault(route.handler, []).append(f"{route.method} {route.path}")
    for ws_route in websocket_routes(template):
        declared.setdefault(ws_route.handler, []).append(ws_route.route_key)
    by_handler = {c.handler: c for c in CASES}
    missing = sorted(set(declared) - set(by_handler))
    if missing:
        raise ValueError(f"no cold-start case for the handlers {missing}")
    for case in CASES:
        if case.route not in declared.get(case.handler, []):
            raise ValueError(
                f"{case.handler} serves {declared.get(case.handler)!r}, not {case.route!r}"
            )
    return [by_handler[h] for h in declared]
