"""`python -m headrace.dev.moto_server -H HOST -p PORT`: moto's server, as `python -m moto.server`
runs it (same dispatcher, same backends, over the wire), minus costs profiled here.

The local AWS endpoint shares the machine with the decoder, so its CPU is the decoder's loss.
Profiled under the benchmark's load (py-spy, moto 5.2):

- a quarter of moto's time went to finding the service of each request (its dispatcher lists
  moto's own package directory and tries every service's URL patterns, every time): the
  service of a host never changes, so it is looked up once;
- werkzeug's development server, which `moto.server` uses, answers every request with
  `Connection: close`, so each AWS call cost a TCP connection and a server thread, and it
  writes an access-log line per request (a tenth of moto's time): served by waitress (the
  standard pure-Python WSGI server) connections stay open, which took about a sixth off a
  GetItem's CPU on both sides of the wire (0.5-0.9 ms of 5), and no access lines are written;
- receiving a message from SQS checked its retention by computing every attribute of the
  queue, counting all its messages three times over, so a receive cost O(received x held)
  (26 ms a message with 200 in the queue): the check reads the retention period alone;
- a DynamoDB UpdateItem parsed its update expression twice, a fifth of its time for a job
  claim (12 actions): the parse of each expression is kept (moto copies the tree before it
  fills in the values);
- every request listed its service's response class's methods (inspect.getmembers) to find
  the action's: listed once per class;
- a read with a ProjectionExpression converted the whole item to plain Python and back to
  keep the attributes named: the worker's check for subscribers and cancels (a BatchGetItem
  of three attributes of every job it holds, twice a second) paid for every job's prompt and
  history. Names of top-level attributes are copied alone;
- DynamoDB Streams' GetRecords: see headrace/dev/moto_streams.py; DynamoDB's item reads:
  headrace/dev/moto_reads.py; update and condition expressions: headrace/dev/moto_updates.py.

Memory (bench/local_endpoint_memory.py) grew by about 9 MiB per TransactWriteItems at 3,000
table items, and by a few KiB per PutItem and SQS message, for as long as the server ran
(118 MiB to 7.2 GiB in an hour of WebSocket traffic):

- every object of a moto model (a DynamoDB item, an SQS message, a table) is appended, when
  it is created, to a list of its class that only a reset empties: it feeds the dashboard's
  /moto-api/data.json, which nothing here reads. Every item ever written and every message
  ever sent or received (a receive deep-copies it) was kept. Models are no longer listed;
- TransactWriteItems deep-copied each table it named, to roll back on failure, and the copy
  was listed as above: 200-500 ms and 9 MiB a call at 3,000 items. The transaction saves the
  items it names instead (DynamoDB's own unit: a transaction writes only those);
- a table with a sort key holds its items in a defaultdict of partitions: reading a missing
  item, or deleting one, left an empty partition behind, one per WebSocket connection that
  ever closed (`conn#<id>`) and per GetItem of a key that is not there. They are dropped;
- an SQS queue remembers the receipt handles of every message deleted, so that a second
  delete with one succeeds: it remembers the latest ones;
- the jobs table's stream kept every record since the start, and every GetRecords left a
  shard iterator behind (headrace/dev/moto_streams.py). A transaction on a table with a
  stream still copies only the items it names, and drops the stream records it wrote if it
  fails.

Since: 98 MiB after the fill, 95 MiB after 15,000 calls of each kind; 4-10 ms a transaction.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import os
import signal
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import moto.dynamodb.models as dynamodb_models
import waitress
from moto.core import responses as moto_responses
from moto.core.common_models import BaseModel
from moto.core.utils import unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs.models import Message, Queue, SQSBackend

from headrace.dev.moto_reads import patch_reads
from headrace.dev.moto_streams import patch_streams
from headrace.dev.moto_updates import patch_updates

# Requests served at once. A long poll (ReceiveMessage waiting for messages) holds its thread
# for up to 20 s, one per worker and queue; the rest are a few milliseconds each.
SERVER_THREADS = 64


class _SqsTurn:
    """SQS requests one at a time, as DynamoDB's (see _Dispatcher); a long poll gives up its
    turn while it waits for messages, so it holds up no one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = threading.local()

    def __enter__(self) -> None:
        self._lock.acquire()
        self._held.value = True

    def __exit__(self, *exc: object) -> None:
        self._held.value = False
        self._lock.release()

    @contextmanager
    def given_up(self) -> Iterator[None]:
        held = getattr(self._held, "value", False)
        if held:
            self.__exit__()
        try:
            yield
        finally:
            if held:
                self.__enter__()


_SQS_TURN = _SqsTurn()
_DYNAMODB_TARGETS = ("DynamoDB_", "DynamoDBStreams_")
# Services whose requests change SQS queues: EventBridge delivers to its SQS targets inside
# its own request.
_SQS_SERVICES = frozenset({"sqs", "events"})


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, with DynamoDB requests applied one at a time, and SQS ones too.

    DynamoDB applies a write to an item as one step: its condition and all its actions, and
    no read sees part of it. moto's backend changes the stored item in place, action by
    action, so requests served on concurrent threads did neither (eight concurrent
    conditional claims of one item took it up to seven times; a read saw a job SUCCEEDED
    without its output). Serving them one at a time costs nothing here: they run under one
    GIL either way, and none of them waits (SQS long polls, which do, are not held up).

    moto's SQS receive walks a queue's messages and sets while other requests change them:
    concurrent receives failed with `list.remove(x): x not in list` (two receivers moving one
    message to the DLQ) and `Set changed size during iteration` (500s to the worker). They are
    served one at a time too; a long poll waits for messages outside its turn (_SqsTurn).
    """

    def __init__(self, create_app: Any) -> None:
        super().__init__(create_app)
        self._dynamodb = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        # DynamoDB Streams' reads too: a read must not see the stream trimmed halfway (below).
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(_DYNAMODB_TARGETS):
            with self._dynamodb:
                return super().__call__(environ, start_response)
        if _signed_service(environ) in _SQS_SERVICES:
            with _SQS_TURN:
                return super().__call__(environ, start_response)
        return super().__call__(environ, start_response)

    @functools.cache  # noqa: B019 - one dispatcher lives as long as the process
    def get_backend_for_host(self, host: str | None) -> Any:
        return super().get_backend_for_host(host)


def _signed_service(environ: dict[str, Any]) -> str:
    """The service in the request's signature, `Credential=KEY/DATE/REGION/SERVICE/...`."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    scope = authorization.partition("Credential=")[2].partition(",")[0].split("/")
    return scope[3] if len(scope) == 5 else ""


def _wait_for_messages(queue: Queue, timeout: int) -> None:
    with _SQS_TURN.given_up():
        _moto_wait_for_messages(queue, timeout)


_moto_wait_for_messages = Queue.wait_for_messages


def _within_retention(backend: SQSBackend, queue_name: str, message: Message) -> bool:
    """SQSBackend.is_message_valid_based_on_retention_period, without the attribute scan."""
    queue: Any = backend.get_queue(queue_name)  # its attributes are set from the API's names
    sent_at = (message.sent_timestamp or 0) / 1000
    return bool(int(queue.message_retention_period) + sent_at > unix_time())


# Receipt handles of deleted messages a queue remembers: a second delete with one comes
# within seconds (a retry), not thousands of deletes later.
DELETED_HANDLES_KEPT = 10_000


class _RecentHandles:
    """A queue's `deleted_messages`, keeping the latest DELETED_HANDLES_KEPT."""

    def __init__(self) -> None:
        self._handles: OrderedDict[str | None, None] = OrderedDict()

    def __contains__(self, handle: object) -> bool:
        return handle in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def update(self, handles: Iterable[str | None]) -> None:
        for handle in handles:
            self._handles[handle] = None
        while len(self._handles) > DELETED_HANDLES_KEPT:
            self._handles.popitem(last=False)


def _queue_init(queue: Queue, *args: Any, **kwargs: Any) -> None:
    _moto_queue_init(queue, *args, **kwargs)
    queue.deleted_messages = _RecentHandles()  # type: ignore[assignment]


_moto_queue_init = Queue.__init__


def _unlisted_model(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
    """BaseModel.__new__ without appending the new object to its class's list."""
    return super(BaseModel, cls).__new__(cls)


# ---- TransactWriteItems, rolled back item by item ----------------------------------------------

_SavedItem = tuple[Table, DynamoType, DynamoType | None, Item | None]
_saving_items = threading.local()


class _CopyOfDynamoDBModels:
    """The `copy` module as moto.dynamodb.models sees it: its one deep copy of a table is the
    transaction's rollback copy, not needed while the transaction saves its items itself."""

    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, Table) and getattr(_saving_items, "value", False):
            return value  # moto "restores" the table itself: the items are restored after
        return copy.deepcopy(value, memo)


def _transact_write_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    saved = _named_items(backend, transact_items)
    streams = [(t, len(t.stream_shard.items)) for t in {s[0] for s in saved} if t.stream_shard]
    _saving_items.value = True
    try:
        _moto_transact_write_items(backend, transact_items)
    except BaseException:
        _restore(saved)
        for table, length in streams:  # a transaction that failed left no stream record
            assert table.stream_shard is not None
            del table.stream_shard.items[length:]
        raise
    finally:
        _saving_items.value = False


_moto_transact_write_items = DynamoDBBackend.transact_write_items


def _named_items(
    backend: DynamoDBBackend, transact_items: list[dict[str, Any]]
) -> list[_SavedItem]:
    """A copy of each item the transaction names (None if absent), before it runs."""
    saved: list[_SavedItem] = []
    for entry in transact_items:
        for kind, operation in entry.items():
            try:
                table = backend.tables[operation["TableName"]]
                key = operation["Item"] if kind == "Put" else operation["Key"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_name = table.range_key_attr
                range_key = DynamoType(key[range_name]) if range_name is not None else None
                current = table.get_item(hash_key, range_key)
            except Exception:  # moto rejects such an operation: it writes nothing
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(current)))
    return saved


def _restore(saved: list[_SavedItem]) -> None:
    # Last first: an item named twice (which moto refuses) gets its state from before both.
    for table, hash_key, range_key, item in reversed(saved):
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item  # type: ignore[assignment]  # a table without sort key
        elif item is None:
            table.items[hash_key].pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item


def _get_item(table: Table, hash_key: DynamoType, *args: Any, **kwargs: Any) -> Item | None:
    try:
        return _moto_get_item(table, hash_key, *args, **kwargs)
    finally:
        _drop_empty_partition(table, hash_key)


def _delete_item(table: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
    try:
        return _moto_delete_item(table, hash_key, range_key)
    finally:
        _drop_empty_partition(table, hash_key)


_moto_get_item = Table.get_item
_moto_delete_item = Table.delete_item


def _project(item: Item, projection_expressions: list[list[str]]) -> Item:
    if any(len(path) != 1 or "[" in path[0] for path in projection_expressions):
        return _moto_project(item, projection_expressions)  # nested paths, list indexes
    names = [path[0] for path in projection_expressions if path[0] in item.attrs]
    attrs = {name: copy.deepcopy(item.attrs[name]) for name in names}
    return Item(hash_key=item.hash_key, range_key=item.range_key, attrs=attrs)


_moto_project = Item.project


def _drop_empty_partition(table: Table, hash_key: DynamoType) -> None:
    if table.range_key_attr is not None and not table.items.get(hash_key, True):
        del table.items[hash_key]


def _patch_moto() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _within_retention  # type: ignore[method-assign,assignment]
    parse = functools.lru_cache(maxsize=256)(UpdateExpressionParser.make)
    UpdateExpressionParser.make = staticmethod(parse)
    # The actions of a response class, listed with inspect.getmembers on every request.
    listed = functools.cache(moto_responses.method_names_from_class)  # type: ignore[attr-defined]
    moto_responses.method_names_from_class = listed  # type: ignore[attr-defined]
    # What kept memory (see the module's docstring).
    BaseModel.__new__ = staticmethod(_unlisted_model)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign,assignment]
    dynamodb_models.copy = _CopyOfDynamoDBModels  # type: ignore[attr-defined,assignment]
    Table.get_item = _get_item  # type: ignore[method-assign,assignment]
    Item.project = _project  # type: ignore[method-assign,assignment]
    Table.delete_item = _delete_item  # type: ignore[method-assign,assignment]
    Queue.__init__ = _queue_init  # type: ignore[method-assign,assignment]
    Queue.wait_for_messages = _wait_for_messages  # type: ignore[method-assign,assignment]
    patch_streams()
    patch_reads()
    patch_updates()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m headrace.dev.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server does: it names URLs
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: sys.exit(0))
    # To stderr (the stack's moto.log): waitress's "Serving on URL", its warnings, and errors.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _patch_moto()
    app = _Dispatcher(create_backend_app)
    waitress.serve(
        app,
        host=args.host,
        port=args.port,
        threads=SERVER_THREADS,
        connection_limit=1000,  # every client keeps a pool of connections open
        asyncore_use_poll=True,  # no limit of 1024 on file descriptors, as select() has
        ident="moto",
    )


if __name__ == "__main__":
    main()
