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
  the action's: listed once per class.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from typing import Any

import waitress
from moto.core import responses as moto_responses
from moto.core.utils import unix_time
from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sqs.models import Message, SQSBackend

# Requests served at once. A long poll (ReceiveMessage waiting for messages) holds its thread
# for up to 20 s, one per worker and queue; the rest are a few milliseconds each.
SERVER_THREADS = 64


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, with DynamoDB requests applied one at a time.

    DynamoDB applies a write to an item as one step: its condition and all its actions, and
    no read sees part of it. moto's backend changes the stored item in place, action by
    action, so requests served on concurrent threads did neither (eight concurrent
    conditional claims of one item took it up to seven times; a read saw a job SUCCEEDED
    without its output). Serving them one at a time costs nothing here: they run under one
    GIL either way, and none of them waits (SQS long polls, which do, are not held up).
    """

    def __init__(self, create_app: Any) -> None:
        super().__init__(create_app)
        self._dynamodb = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with self._dynamodb:
                return super().__call__(environ, start_response)
        return super().__call__(environ, start_response)

    @functools.cache  # noqa: B019 - one dispatcher lives as long as the process
    def get_backend_for_host(self, host: str | None) -> Any:
        return super().get_backend_for_host(host)


def _within_retention(backend: SQSBackend, queue_name: str, message: Message) -> bool:
    """SQSBackend.is_message_valid_based_on_retention_period, without the attribute scan."""
    queue: Any = backend.get_queue(queue_name)  # its attributes are set from the API's names
    sent_at = (message.sent_timestamp or 0) / 1000
    return bool(int(queue.message_retention_period) + sent_at > unix_time())


def _patch_moto() -> None:
    SQSBackend.is_message_valid_based_on_retention_period = _within_retention  # type: ignore[method-assign,assignment]
    parse = functools.lru_cache(maxsize=256)(UpdateExpressionParser.make)
    UpdateExpressionParser.make = staticmethod(parse)
    # The actions of a response class, listed with inspect.getmembers on every request.
    listed = functools.cache(moto_responses.method_names_from_class)  # type: ignore[attr-defined]
    moto_responses.method_names_from_class = listed  # type: ignore[attr-defined]


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
