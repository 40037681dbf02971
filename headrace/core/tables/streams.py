"""DynamoDB layout of streams: numbered chunks, and who follows which job.

Items (same table as the jobs, keys `pk`/`sk`):
- `job#<id>` / `chunk#<seq>`: one stream event (JSON) and the token ids it covers, so a retried
  job can continue the stream where the last attempt stopped.
- `job#<id>` / `stream`: the stream's head, where every flush of chunks is committed first,
  conditional on the writer's lease epoch (headrace.core.tables.leases) and on the next seq:
  a worker whose job was taken over cannot add a chunk, and no seq is written twice. It holds
  the last flush's chunks (`tail`) until they are stored as chunk items.
- `job#<id>` / `sub#<connection_id>`: a WebSocket connection following the job from `from_seq`;
  `attached_by` says who delivers to it (a worker while the job runs, a handler replaying a
  finished job). Attaching is a conditional write, so exactly one of them replays the past.
  Adding one also counts it in the job record's `subscriptions`, so a worker learns of new
  followers of all its jobs with one BatchGetItem instead of a Query per job.

Connections and the writes that add and remove subscriptions: headrace.core.tables.connections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from headrace.core.contracts import StreamEvent
from headrace.core.tables.jobs import Item, job_key

_SEQ_WIDTH = 9
# On a stream head committed in the transaction of the job's final state, which carries the
# decoder's first-token time: a head created so needs no first token noted from the stream.
WITH_RESULT = "with_result"
HANDLER_ATTACHMENT = "handler"


def chunk_sk(seq: int) -> str:
    return f"chunk#{seq:0{_SEQ_WIDTH}d}"


def put_chunk(
    table: str,
    *,
    request_id: str,
    event: StreamEvent,
    token_ids: list[int],
    expires_at: int,
    epoch: int = 0,
) -> dict[str, Any]:
    """`epoch`: the lease epoch of the worker that committed it (headrace.core.tables.leases)."""
    assert event.seq is not None
    return {
        "TableName": table,
        "Item": {
            "pk": job_key(request_id)["pk"],
            "sk": {"S": chunk_sk(event.seq)},
            "seq": {"N": str(event.seq)},
            "event": {"S": event.model_dump_json()},
            "token_ids": {"S": ",".join(map(str, token_ids))},
            "epoch": {"N": str(epoch)},
            "expires_at": {"N": str(expires_at)},
        },
    }


def query_chunks(table: str, request_id: str, *, from_seq: int = 0) -> dict[str, Any]:
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
        "ExpressionAttributeValues": {
            ":pk": job_key(request_id)["pk"],
            ":first": {"S": chunk_sk(from_seq)},
            ":last": {"S": chunk_sk(10**_SEQ_WIDTH - 1)},
        },
        "ConsistentRead": True,
    }


def stream_head_key(request_id: str) -> Item:
    return {"pk": job_key(request_id)["pk"], "sk": {"S": "stream"}}


def open_stream_head(table: str, *, request_id: str, epoch: int, expires_at: int) -> dict[str, Any]:
    """Take the stream over for `epoch`: from here, writers of older epochs commit nothing.

    ALL_NEW gives the next seq to write and the last flush committed (`tail`), which the
    writer of an older epoch may not have stored as chunk items yet.
    """
    return {
        "TableName": table,
        "Key": stream_head_key(request_id),
        "UpdateExpression": (
            "SET epoch = :epoch, next_seq = if_not_exists(next_seq, :zero), expires_at = :ttl"
        ),
        "ConditionExpression": "attribute_not_exists(epoch) OR epoch < :epoch",
        "ExpressionAttributeValues": {
            ":epoch": {"N": str(epoch)},
            ":zero": {"N": "0"},
            ":ttl": {"N": str(expires_at)},
        },
        "ReturnValues": "ALL_NEW",
    }


def commit_flush(
    table: str,
    *,
    request_id: str,
    epoch: int,
    from_seq: int | None,
    items: list[Item],
    expires_at: int,
    stored_with_it: bool = False,
) -> dict[str, Any]:
    """Commit chunk items (seqs from_seq on) to the stream's head, for the writer of `epoch`.
    from_seq None: the first flush of a first attempt, which creates the head (so it fails if a
    later epoch opened it first). `stored_with_it`: the items go in the same transaction, so
    the head keeps no `tail` of them (nothing committed is left unstored)."""
    values: dict[str, Any] = {
        ":epoch": {"N": str(epoch)},
        ":next": {"N": str((from_seq or 0) + len(items))},
        ":tail": {"S": json.dumps([] if stored_with_it else items)},
        ":ttl": {"N": str(expires_at)},
    }
    if from_seq is None:
        condition = "attribute_not_exists(pk)"
    else:
        condition = "epoch = :epoch AND next_seq = :seq"
        values[":seq"] = {"N": str(from_seq)}
    return {
        "TableName": table,
        "Key": stream_head_key(request_id),
        "UpdateExpression": "SET epoch = :epoch, next_seq = :next, tail = :tail, expires_at = :ttl",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }


def flush_actions(commit: dict[str, Any], items: list[Item]) -> list[dict[str, Any]]:
    """A flush as TransactWriteItems actions: its head commit (`commit_flush` of these items)
    and the chunk items themselves, stored together or not at all."""
    table = commit["TableName"]
    return [{"Update": commit}, *({"Put": {"TableName": table, "Item": item}} for item in items)]


def last_flush_actions(commit: dict[str, Any], items: list[Item]) -> list[dict[str, Any]]:
    """The last flush's actions (`flush_actions`), committed with the job's final state, so the
    job is final exactly when its whole stream is stored. The head is marked WITH_RESULT."""
    marked = {
        **commit,
        "UpdateExpression": f"{commit['UpdateExpression']}, {WITH_RESULT} = :with_result",
        "ExpressionAttributeValues": {
            **commit["ExpressionAttributeValues"],
            ":with_result": {"BOOL": True},
        },
    }
    return flush_actions(marked, items)


def get_stream_head(table: str, request_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": stream_head_key(request_id), "ConsistentRead": True}


@dataclass(frozen=True)
class StreamHead:
    epoch: int
    next_seq: int
    tail: list[Item]  # the chunk items of the last flush committed

    @classmethod
    def from_item(cls, item: Item) -> StreamHead:
        return cls(
            epoch=int(item["epoch"]["N"]) if "epoch" in item else 0,
            next_seq=int(item["next_seq"]["N"]) if "next_seq" in item else 0,
            tail=json.loads(item["tail"]["S"]) if "tail" in item else [],
        )


def chunk_seq(item: Item) -> int:
    return int(item["seq"]["N"])


@dataclass(frozen=True)
class StoredChunk:
    event: StreamEvent
    token_ids: list[int]

    @classmethod
    def from_item(cls, item: Item) -> StoredChunk:
        ids = item.get("token_ids", {"S": ""})["S"]
        return cls(
            event=StreamEvent.model_validate_json(item["event"]["S"]),
            token_ids=[int(i) for i in ids.split(",") if i],
        )


# ---- subscriptions, as a worker reads and attaches them ----------------------------------


def get_subscription_counts(table: str, request_ids: list[str]) -> dict[str, Any]:
    """BatchGetItem (at most 100 ids) of the jobs' `subscriptions` counters, and whether a
    cancel was asked for (headrace.core.tables.jobs.request_cancel)."""
    return {
        "RequestItems": {
            table: {
                "Keys": [job_key(r) for r in request_ids],
                "ProjectionExpression": "pk, subscriptions, cancel_requested_at",
                "ConsistentRead": True,
            }
        }
    }


def subscription_count(item: Item) -> tuple[str, int]:
    """(request_id, subscriptions) of an item that get_subscription_counts returned."""
    count = item.get("subscriptions")
    return item["pk"]["S"].removeprefix("job#"), int(count["N"]) if count else 0


def cancel_requested(item: Item) -> bool:
    """Whether a cancel was asked for the job of an item that get_subscription_counts returned."""
    return "cancel_requested_at" in item


def query_subscriptions(table: str, request_id: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :sub)",
        "ExpressionAttributeValues": {":pk": job_key(request_id)["pk"], ":sub": {"S": "sub#"}},
        "ConsistentRead": True,
    }


@dataclass(frozen=True)
class Subscription:
    request_id: str
    connection_id: str
    endpoint: str
    from_seq: int
    attached_by: str | None
    delivered_seq: int = -1  # the last seq a worker is known to have posted to it

    @classmethod
    def from_item(cls, item: Item) -> Subscription:
        return cls(
            request_id=item["pk"]["S"].removeprefix("job#"),
            connection_id=item["connection_id"]["S"],
            endpoint=item["endpoint"]["S"],
            from_seq=int(item["from_seq"]["N"]),
            attached_by=item["attached_by"]["S"] if "attached_by" in item else None,
            delivered_seq=int(item["delivered_seq"]["N"]) if "delivered_seq" in item else -1,
        )

    @property
    def resume_seq(self) -> int:
        """Where a worker taking over resumes: after what was known delivered. Events posted
        since that record are posted again (clients drop seqs they have seen)."""
        return max(self.from_seq, self.delivered_seq + 1)


def record_delivered(
    table: str, *, request_id: str, connection_id: str, seq: int
) -> dict[str, Any]:
    """Note that `seq` was posted to this subscription (never re-creating a deleted one)."""
    return {
        "TableName": table,
        "Key": {"pk": job_key(request_id)["pk"], "sk": {"S": f"sub#{connection_id}"}},
        "UpdateExpression": "SET delivered_seq = :seq",
        "ConditionExpression": "attribute_exists(pk)",
        "ExpressionAttributeValues": {":seq": {"N": str(seq)}},
    }


def attach_subscription(
    table: str, *, request_id: str, connection_id: str, attacher: str
) -> dict[str, Any]:
    """Become the one who delivers to this subscription.

    A worker may take over from a worker of an earlier attempt (it resends from the
    subscription's `resume_seq`; clients drop seqs they have seen). Nobody takes over from a
    handler's replay, and a handler never takes over from a worker: a worker delivers the last
    event before the job is final.
    """
    condition = "attribute_exists(pk) AND (attribute_not_exists(attached_by)"
    values: dict[str, Any] = {":me": {"S": attacher}}
    if attacher != HANDLER_ATTACHMENT:
        # Its own attach again too: a worker whose first try's answer was lost tries again.
        condition += " OR attached_by <> :handler"
        values[":handler"] = {"S": HANDLER_ATTACHMENT}
    condition += ")"
    return {
        "TableName": table,
        "Key": {"pk": job_key(request_id)["pk"], "sk": {"S": f"sub#{connection_id}"}},
        "UpdateExpression": "SET attached_by = :me",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
