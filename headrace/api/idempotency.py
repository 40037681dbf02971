"""Idempotent submit: a request with an Idempotency-Key that was already used answers the job of
its first request instead of creating another.

Every door (the async and sync routes, the streaming route, the WebSocket `complete` frame)
submits through `submit`, so one key record serves them all: a key first used over HTTP can be
repeated over the WebSocket API. The record (headrace.core.tables.idempotency) is claimed with a
conditional write before the job is recorded, so of any number of concurrent requests with one
key exactly one records a job; the others wait for it and answer its request_id. A key reused
with another request (compared after validation and model resolution) is a 422; one whose first
request is still recording its job, past a short wait, a 409 (as the IETF's Idempotency-Key
header draft answers both). A first request that fails leaves no record, so a retry submits
anew; one that died mid-way blocks its key only until `idempotency_in_progress_seconds`.

The record follows Powertools' idempotency utility (conditional put, in-progress expiry, payload
hash, delete on failure) without using it: it answers a concurrent repeat with an error where a
repeat here must get the job, caches a handler's response where the sync and streaming routes
must follow a job still running, and keys records by function where four doors share one key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headrace.api import completions
from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import CompletionRequest, JobStatus
from headrace.core.errors import ConditionFailed, Conflict, HeadraceError, InvalidRequest
from headrace.core.tables import idempotency as key_table
from headrace.core.tables.connections import Connection
from headrace.core.tables.idempotency import KeyRecord

logger = logging.getLogger("headrace.api")

HEADER = "idempotency-key"  # as payload 2.0 events carry header names: lower-cased
FRAME_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 255
# Visible ASCII but `"` and `\`: UUIDs, ULIDs, base64 and the like. The IETF draft's quoted
# form ("...", a structured-field string) is accepted too, its quotes not part of the key.
_KEY_CHARS = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# How long a repeat waits for the first request of its key to record its job: that takes a
# few writes, so only a first request that stalled or died makes a repeat give up (409).
WAIT_FOR_FIRST_SECONDS = 10.0
_POLL_SECONDS = 0.05


class IdempotencyConflict(HeadraceError):
    """The key was used with another request (422, as the IETF draft answers)."""

    status_code = 422


@dataclass(frozen=True)
class IdempotencyKey:
    value: str
    name: str  # how the client sent it (the header or the frame's field), for error details


@dataclass(frozen=True)
class Submission:
    request_id: str
    status: JobStatus
    replayed: bool = False  # the job of an earlier request with the same key


def parse_key(value: object, *, name: str) -> IdempotencyKey:
    """A client's key, validated; an InvalidRequest naming `name` otherwise (any input)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a string")
    key = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not key:
        raise InvalidRequest(f"{name}: must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{name}: at most {MAX_KEY_LENGTH} characters")
    if not _KEY_CHARS.fullmatch(key):
        raise InvalidRequest(
            f"{name}: only visible ASCII characters, without quotes or backslashes"
        )
    return IdempotencyKey(value=key, name=name)


def key_from_headers(headers: Mapping[str, str]) -> IdempotencyKey | None:
    value = headers.get(HEADER)
    return None if value is None else parse_key(value, name="Idempotency-Key")


def key_from_frame(frame: Mapping[str, Any]) -> IdempotencyKey | None:
    value = frame.get(FRAME_FIELD)
    return None if value is None else parse_key(value, name=FRAME_FIELD)


def fingerprint(request: CompletionRequest, model: str) -> str:
    """The SHA-256 of the canonical request: the model resolved, fields at their default left
    out (sending one's default is the same request), keys sorted."""
    fields = request.model_copy(update={"model": model}).model_dump(
        mode="json", exclude_defaults=True
    )
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class _Claim:
    owner: str
    key: IdempotencyKey
    fingerprint: str


def submit(
    services: ApiServices,
    *,
    owner: str,
    request: CompletionRequest,
    model: str,
    key: IdempotencyKey | None,
    followed_by: Connection | None = None,
) -> Submission:
    """`completions.submit`, once per key and owner within the retention period."""
    if key is None:
        submitted = completions.submit(
            services, owner=owner, request=request, model=model, followed_by=followed_by
        )
        return Submission(submitted.request_id, submitted.status)
    completions.check_limits(services.settings, request)  # a refused request holds no key
    claim = _Claim(owner, key, fingerprint(request, model))
    deadline = services.clock() + WAIT_FOR_FIRST_SECONDS
    while True:
        token = str(uuid.uuid4())
        if _try_claim(services, claim, token):
            return _submit_first(services, claim, token, request, model, followed_by)
        record = _read(services, claim)
        if record is not None and record.token == token:
            # Our own write: retried after its answer was lost, it lost to itself.
            return _submit_first(services, claim, token, request, model, followed_by)
        if record is not None and record.fingerprint != claim.fingerprint:
            raise IdempotencyConflict(
                f"{key.name}: this key was already used with a different request; use a new"
                " key for a new request"
            )
        if record is not None and record.request_id is not None:
            job = completions.get_job(services, owner=owner, request_id=record.request_id)
            return Submission(job.request_id, job.status, replayed=True)
        # In progress (another request is recording the job), or gone since our write (that
        # request failed): wait for the one, claim again for the other.
        now = services.clock()
        if now >= deadline:
            raise Conflict(
                f"{key.name}: a request with this key is still being submitted; retry shortly"
            )
        if record is not None and record.in_progress_until > now:
            services.sleep(min(_POLL_SECONDS, record.in_progress_until - now, deadline - now))


def _try_claim(services: ApiServices, claim: _Claim, token: str) -> bool:
    settings = services.settings
    try:
        call_aws(
            services.dynamodb.put_item,
            **key_table.claim(
                settings.table_name,
                owner=claim.owner,
                idempotency_key=claim.key.value,
                fingerprint=claim.fingerprint,
                token=token,
                now=services.clock(),
                in_progress_seconds=settings.idempotency_in_progress_seconds,
                retention_seconds=min(
                    settings.idempotency_retention_seconds, settings.job_ttl_seconds
                ),
            ),
        )
    except ConditionFailed:
        return False
    return True


def _read(services: ApiServices, claim: _Claim) -> KeyRecord | None:
    found = call_aws(
        services.dynamodb.get_item,
        **key_table.get(
            services.settings.table_name, owner=claim.owner, idempotency_key=claim.key.value
        ),
    )
    item = found.get("Item")
    return KeyRecord.from_item(item) if item else None


def _submit_first(
    services: ApiServices,
    claim: _Claim,
    token: str,
    request: CompletionRequest,
    model: str,
    followed_by: Connection | None,
) -> Submission:
    """The key is ours: record and enqueue the job, then point the key at it."""
    table = services.settings.table_name
    held = {"owner": claim.owner, "idempotency_key": claim.key.value, "token": token}
    try:
        submitted = completions.submit(
            services, owner=claim.owner, request=request, model=model, followed_by=followed_by
        )
    except Exception:
        # As Powertools does: a failed first request leaves no record, so a retry submits anew.
        with contextlib.suppress(HeadraceError):
            call_aws(services.dynamodb.delete_item, **key_table.release(table, **held))
        raise
    try:
        call_aws(
            services.dynamodb.update_item,
            **key_table.complete(table, **held, request_id=submitted.request_id),
        )
    except HeadraceError as e:
        # The job is queued: answer it. Repeats wait for the key's in-progress time to pass,
        # then one of them submits again (the price of a write lost after the enqueue).
        logger.warning("could not complete the idempotency record: %s", e.detail)
    return Submission(submitted.request_id, submitted.status)
