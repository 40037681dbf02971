"""Which workers serve a model, and how deep the queues were when one last looked.

`model#<name>` / `worker#<worker_id>`: until when that worker serves the model (renewed with
the model's `presence` item, headrace.core.tables.jobs), and the visible messages of each lane's
queue as the worker last counted them. A worker that stops deletes its items; one that dies
leaves them to lapse (`served_until`) and to DynamoDB's TTL (`expires_at`, an hour later).
A queued job's view reads the model's whole partition, its presence item included, in one
Query (headrace.api.capacity).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from headrace.core.tables.jobs import Item, presence_key

_WORKER_PREFIX = "worker#"


def worker_key(model: str, worker_id: str) -> Item:
    return {"pk": presence_key(model)["pk"], "sk": {"S": f"{_WORKER_PREFIX}{worker_id}"}}


def put_worker(
    table: str,
    *,
    model: str,
    worker_id: str,
    until: float,
    waiting: Mapping[str, int] | None,
    counted_at: float,
) -> dict[str, Any]:
    item: Item = {
        **worker_key(model, worker_id),
        "served_until": {"N": repr(until)},
        "expires_at": {"N": str(int(until) + 3600)},
    }
    if waiting is not None:
        item["waiting"] = {"M": {lane: {"N": str(n)} for lane, n in waiting.items()}}
        item["counted_at"] = {"N": repr(counted_at)}
    return {"TableName": table, "Item": item}


def delete_worker(table: str, *, model: str, worker_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": worker_key(model, worker_id)}


def query_model(table: str, model: str) -> dict[str, Any]:
    """The model's presence and worker items (small: one page holds thousands of workers)."""
    return {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": presence_key(model)["pk"]},
    }


@dataclass(frozen=True)
class ModelCapacity:
    """What the model's partition says about who serves it."""

    worker_until: tuple[float, ...] = ()  # each worker's served_until
    last_served_until: float | None = None  # the model's presence item: its latest worker's
    waiting: dict[str, int] = field(default_factory=dict)  # lane -> visible, freshest count
    counted_at: float | None = None

    @classmethod
    def from_items(cls, items: list[Item]) -> ModelCapacity:
        until: list[float] = []
        last: float | None = None
        waiting: dict[str, int] = {}
        counted_at: float | None = None
        for item in items:
            sk = item["sk"]["S"]
            served_until = float(item["served_until"]["N"])
            if sk == "presence":
                last = served_until
            elif sk.startswith(_WORKER_PREFIX):
                until.append(served_until)
                at = float(item["counted_at"]["N"]) if "counted_at" in item else None
                if at is not None and (counted_at is None or at > counted_at):
                    counted_at = at
                    waiting = {k: int(v["N"]) for k, v in item["waiting"]["M"].items()}
        return cls(tuple(until), last, waiting, counted_at)

    def serving(self, now: float) -> int:
        """Workers whose presence has not lapsed."""
        return sum(1 for until in self.worker_until if until > now)
