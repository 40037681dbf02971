"""WebSocket service functions: connect, complete, subscribe (with replay), disconnect."""

from __future__ import annotations

import contextlib
import logging

from headrace.api import completions, idempotency
from headrace.api.auth import authenticate, require_known_key
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import (
    CompletionRequest,
    JobStatus,
    StreamEvent,
    StreamOutput,
    WebSocketAck,
)
from headrace.core.control import halted_event
from headrace.core.errors import (
    ConditionFailed,
    Gone,
    HeadraceError,
    NotFound,
    TransientError,
    Unauthorized,
)
from headrace.core.tables import api_keys as key_table
from headrace.core.tables import connections as connection_table
from headrace.core.tables import streams as stream_table
from headrace.core.tables.connections import Connection
from headrace.core.tables.jobs import JobRecord

logger = logging.getLogger("headrace.api")

KNOWN_ACTIONS = ("complete", "subscribe", "cancel")


def management_endpoint(services: ApiServices, domain_name: str, stage: str) -> str:
    return services.settings.websocket_management_url or f"https://{domain_name}/{stage}"


def connect(
    services: ApiServices, *, connection_id: str, api_key: str | None, endpoint: str
) -> None:
    """Record the connection, and list it under its key so that revoking the key closes it."""
    owner = authenticate(services, api_key)
    table = services.settings.table_name
    now = services.clock()
    record = connection_table.put_connection(
        table, connection_id=connection_id, owner=owner, endpoint=endpoint, now=now
    )
    listing = key_table.put_key_connection(
        table,
        key_id=owner,
        connection_id=connection_id,
        endpoint=endpoint,
        expires_at=connection_table.connection_expiry(now),
    )
    call_aws(
        services.dynamodb.transact_write_items,
        TransactItems=[{"Put": record}, {"Put": listing}],
    )


def connection(services: ApiServices, connection_id: str) -> Connection:
    """The connection a frame came on, if its key is still known (through the key cache).

    A connection whose key was revoked gets the API's 401 as an error event and is closed:
    revocation closes it too, but this holds should that have failed.
    """
    found = call_aws(
        services.dynamodb.get_item,
        TableName=services.settings.table_name,
        Key=connection_table.connection_key(connection_id),
        ConsistentRead=True,
    )
    if "Item" not in found:
        raise Unauthorized("this connection is not authenticated; reconnect with an API key")
    conn = Connection.from_item(found["Item"])
    try:
        require_known_key(services, conn.owner)
    except Unauthorized as e:
        with contextlib.suppress(HeadraceError):  # best effort: the frame is refused anyway
            if post_event(services, conn, StreamEvent.failure(None, e.status_code, e.detail)):
                close_connection(services, conn.endpoint, conn.connection_id)
        raise
    return conn


def close_connection(services: ApiServices, endpoint: str, connection_id: str) -> bool:
    """Close a connection from the server side ($disconnect follows); False if it was gone."""
    client = services.management_client(endpoint)
    try:
        call_aws(client.delete_connection, ConnectionId=connection_id)
    except Gone:
        return False
    return True


def disconnect(services: ApiServices, *, connection_id: str) -> None:
    """Forget the connection, every subscription it had, and its entry under its key."""
    table = services.settings.table_name
    answer = call_aws(
        services.dynamodb.query, **connection_table.query_connection_items(table, connection_id)
    )
    items = answer.get("Items", [])
    for request in connection_table.forget_connection(table, connection_id, items):
        call_aws(services.dynamodb.transact_write_items, **request)


def _add_subscription(
    services: ApiServices, conn: Connection, request_id: str, from_seq: int
) -> None:
    """Subscribe `conn` to a job of its own key; any other is not found, as a missing one."""
    request = connection_table.add_subscription(
        services.settings.table_name,
        request_id=request_id,
        connection_id=conn.connection_id,
        endpoint=conn.endpoint,
        from_seq=from_seq,
        now=services.clock(),
        owner=conn.owner,
    )
    try:
        call_aws(services.dynamodb.transact_write_items, **request)
    except ConditionFailed:
        raise NotFound(f"request {request_id!r} not found") from None


def complete(
    services: ApiServices,
    conn: Connection,
    request: CompletionRequest,
    key: idempotency.IdempotencyKey | None = None,
) -> WebSocketAck:
    """Submit a job and subscribe this connection to it before any worker can start it."""
    model = completions.resolve_model(services, request, None)
    submitted = idempotency.submit(
        services,
        owner=conn.owner,
        request=request,
        model=model,
        key=key,
        followed_by=conn,
    )
    if submitted.replayed:  # the key's first request made the job: follow it from seq 0
        ack = subscribe(services, conn, request_id=submitted.request_id, from_seq=0)
        return ack.model_copy(update={"action": "complete"})
    return WebSocketAck(action="complete", request_id=submitted.request_id, status=submitted.status)


def subscribe(
    services: ApiServices, conn: Connection, *, request_id: str, from_seq: int
) -> WebSocketAck:
    """Follow a job of the same key from `from_seq`: replay what is stored, then live."""
    completions.check_request_id(request_id)
    _add_subscription(services, conn, request_id, from_seq)
    # Read again after subscribing: if the job is final now, its worker may have looked for
    # subscribers before ours existed, so this handler replays (at most one side attaches).
    record = completions.get_job(services, owner=conn.owner, request_id=request_id)
    if record.status.is_final:
        _replay_finished(services, conn, record, from_seq)
    return WebSocketAck(
        action="subscribe", request_id=request_id, status=record.status, from_seq=from_seq
    )


def _replay_finished(
    services: ApiServices, conn: Connection, record: JobRecord, from_seq: int
) -> None:
    table = services.settings.table_name
    try:
        call_aws(
            services.dynamodb.update_item,
            **stream_table.attach_subscription(
                table,
                request_id=record.request_id,
                connection_id=conn.connection_id,
                attacher=stream_table.HANDLER_ATTACHMENT,
            ),
        )
    except ConditionFailed:
        return  # the worker delivers (or delivered) to this subscription
    answer = call_aws(
        services.dynamodb.query,
        **stream_table.query_chunks(table, record.request_id, from_seq=from_seq),
    )
    events = [stream_table.StoredChunk.from_item(i).event for i in answer.get("Items", [])]
    if not events and from_seq == 0:
        events = [event_without_stream(record)]
    for event in events:
        post_event(services, conn, event)


def event_without_stream(record: JobRecord) -> StreamEvent:
    """A final job that never streamed (it failed before decoding, or was cancelled)."""
    if record.status.is_halted and record.output is not None:
        event = halted_event(
            record.request_id,
            record.status,
            text=record.output["text"],
            num_prompt_tokens=record.output.get("num_prompt_tokens"),
            num_completion_tokens=record.output["num_completion_tokens"],
        )
        event.seq = 0
        return event
    if record.status is JobStatus.SUCCEEDED and record.output is not None:
        return StreamEvent(
            request_id=record.request_id,
            seq=0,
            output=StreamOutput(
                text=record.output["text"],
                finished=True,
                num_prompt_tokens=record.output.get("num_prompt_tokens"),
                num_completion_tokens=record.output["num_completion_tokens"],
            ),
        )
    message = record.error.message if record.error else f"job {record.status.value}"
    status = 400 if record.error and record.error.type == "invalid_request" else 500
    return StreamEvent.failure(record.request_id, status, message)


def post_event(services: ApiServices, conn: Connection, event: StreamEvent) -> bool:
    """Send one event to a connection; False if it is gone (then its subscriptions go too)."""
    client = services.management_client(conn.endpoint)
    try:
        call_aws(
            client.post_to_connection,
            ConnectionId=conn.connection_id,
            Data=event.model_dump_json().encode(),
        )
    except Gone:
        with contextlib.suppress(HeadraceError):
            disconnect(services, connection_id=conn.connection_id)
        return False
    except TransientError as e:
        # Not gone, but not reachable now: the event stays stored for a resubscribe.
        logger.warning("could not post to the connection: %s", e.detail)
    return True
