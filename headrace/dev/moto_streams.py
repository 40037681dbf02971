"""moto's DynamoDB Streams, as the local AWS endpoint serves them (headrace/dev/moto_server.py).

- The jobs table's stream (README "Event-driven use") kept every record since the start, and
  every GetRecords left a shard iterator behind: the latest ones are kept.
- GetRecords (the dev stack's stream poller, headrace/dev/event_sources.py) went through
  moto's generic serializer, which walks every attribute of every record through the
  service's shapes: 32 ms a call of a few job records, 45% of the endpoint's CPU under the
  worker benchmark. The records are kept in wire form already but for times and binary
  values, so they are dumped as JSON with those two converted (2.5 ms).
- An UpdateItem that creates its item (alone or in a transaction) made two INSERT records:
  moto first puts an item of the key alone, which it records, then records the update with no
  old image. DynamoDB records one INSERT with the whole new item; consumers of the stream (the
  job events' first-token note, for one) acted on the keys-only one too. The placeholder put is
  not recorded.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading
from collections import OrderedDict
from typing import Any

from moto.core.utils import unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import StreamShard, Table
from moto.dynamodbstreams.models import DynamoDBStreamsBackend
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

# Stream records a table keeps (DynamoDB keeps 24 hours of them; moto every one since the
# start): the consumer (headrace/dev/event_sources.py) reads them within a fraction of a second.
STREAM_RECORDS_KEPT = 5_000
# Shard iterators remembered: every GetRecords makes a new one, and moto kept them all.
SHARD_ITERATORS_KEPT = 1_000


class _UpdateState(threading.local):
    updating = False  # in an UpdateItem, before it created its item (if it does)
    placing = False  # in the put of the item an UpdateItem creates (keys only)


_update_state = _UpdateState()


def _update_item(backend: DynamoDBBackend, *args: Any, **kwargs: Any) -> Any:
    _update_state.updating = True
    try:
        return _moto_update_item(backend, *args, **kwargs)
    finally:
        _update_state.updating = False


def _table_put_item(table: Table, *args: Any, **kwargs: Any) -> Any:
    if not _update_state.updating:
        return _moto_table_put_item(table, *args, **kwargs)
    # moto's update_item puts nothing else: this is the keys-only item it creates.
    _update_state.updating, _update_state.placing = False, True
    try:
        return _moto_table_put_item(table, *args, **kwargs)
    finally:
        _update_state.placing = False


_moto_update_item = DynamoDBBackend.update_item
_moto_table_put_item = Table.put_item


def _stream_add(shard: StreamShard, old: Item | None, new: Item | None) -> None:
    if _update_state.placing:
        return
    _moto_stream_add(shard, old, new)
    excess = len(shard.items) - STREAM_RECORDS_KEPT
    if excess > 0:
        # Sequence numbers stay as they were: the first one kept is the new horizon.
        del shard.items[:excess]
        shard.starting_sequence_number += excess


_moto_stream_add = StreamShard.add


class _RecentIterators(OrderedDict[str, Any]):
    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > SHARD_ITERATORS_KEPT:
            self.popitem(last=False)


def _get_records(handler: DynamoDBStreamsHandler) -> str:
    """GetRecords answered in DynamoDB Streams' JSON directly (see the module's docstring)."""
    iterator = handler._get_param("ShardIterator")
    limit = handler._get_param("Limit") or 1000
    return json.dumps(handler.backend.get_records(iterator, limit), default=wire_value)


def wire_value(value: object) -> float | str:
    """A time as epoch seconds, a binary value in base64: as the service's JSON has them."""
    if isinstance(value, datetime.datetime):  # moto's utcnow(): naive, in UTC
        return unix_time(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _streams_init(backend: DynamoDBStreamsBackend, *args: Any, **kwargs: Any) -> None:
    _moto_streams_init(backend, *args, **kwargs)
    backend.shard_iterators = _RecentIterators()


_moto_streams_init = DynamoDBStreamsBackend.__init__


def patch_streams() -> None:
    StreamShard.add = _stream_add  # type: ignore[method-assign,assignment]
    DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign,assignment]
    Table.put_item = _table_put_item  # type: ignore[method-assign,assignment]
    DynamoDBStreamsBackend.__init__ = _streams_init  # type: ignore[method-assign,assignment]
    DynamoDBStreamsHandler.get_records = _get_records  # type: ignore[method-assign,assignment]
