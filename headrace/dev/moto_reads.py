"""DynamoDB's item reads, as the local AWS endpoint answers them (headrace/dev/moto_server.py).

moto builds the items of a GetItem, BatchGetItem, Query or Scan answer in DynamoDB's wire form
already, then passes the whole answer through its generic serializer, which walks every
attribute of every item through the service's shapes: most of the endpoint's CPU for the
worker's check for new subscribers and cancels (a BatchGetItem of every job it holds, twice a
second). The answer is dumped as JSON directly, binary values in base64 and times in epoch
seconds as the service's JSON has them (moto_streams.wire_value), members that are None left
out as the serializer leaves them out.

A Query of a table's own key reads the one partition it names. moto gathered every item of
the table and sorted them all to keep the partition's, so a query cost grew with the table:
the worker's look for a job's subscribers and the WebSocket handlers' look at a closing
connection's items took 8-16 ms each at the streaming benchmark's table size, the largest
share of the endpoint's CPU with four followers per job (bench/worker_cpu.py).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

from headrace.dev.moto_streams import wire_value

READS = ("get_item", "batch_get_item", "query", "scan")


_INDEX_NAME_AT = 6  # Table.query's positional parameters, after hash_key: moto passes them so

_queried = threading.local()  # the partition a base-table Query on this thread reads


def patch_reads() -> None:
    for name in READS:
        setattr(DynamoHandler, name, _answered_directly(getattr(DynamoHandler, name)))
    Table.query = _query  # type: ignore[method-assign,assignment]
    Table.all_items = _all_items  # type: ignore[method-assign,assignment]


def _query(table: Table, hash_key: DynamoType | None, *args: Any, **kwargs: Any) -> Any:
    index_name = args[_INDEX_NAME_AT] if len(args) > _INDEX_NAME_AT else kwargs.get("index_name")
    if index_name is not None or hash_key is None:  # an index is keyed otherwise: moto's way
        return _moto_query(table, hash_key, *args, **kwargs)
    _queried.partition = hash_key
    try:
        return _moto_query(table, hash_key, *args, **kwargs)
    finally:
        _queried.partition = None


def _all_items(table: Table) -> list[Item]:
    """moto's base-table Query keeps the items of its partition from these, then sorts them by
    sort key itself; every other caller gets the whole table, sorted, as from moto."""
    hash_key = getattr(_queried, "partition", None)
    if hash_key is None:
        return _moto_all_items(table)
    partition = table.items.get(hash_key)  # get: the defaultdict must not grow a partition
    if partition is None:
        return []
    if table.range_key_attr:
        return list(partition.values())
    return [partition]  # type: ignore[list-item]  # a table without sort key: the item itself


_moto_query = Table.query
_moto_all_items = Table.all_items


def _answered_directly(
    action: Callable[[DynamoHandler], ActionResult],
) -> Callable[[DynamoHandler], str]:
    @functools.wraps(action)
    def read(handler: DynamoHandler) -> str:
        answer: dict[str, Any] = action(handler).result  # type: ignore[assignment]
        present = {key: value for key, value in answer.items() if value is not None}
        return json.dumps(present, default=wire_value)

    return read
