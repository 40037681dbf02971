"""`python -m headrace.dev.moto_server -H HOST -p PORT`: moto's server, as `python -m moto.server`
runs it (same dispatcher, same request handler, over the wire), minus two per-request costs.

The local AWS endpoint shares the machine with the decoder, so its CPU is the decoder's loss.
Profiled under the benchmark's load (py-spy, moto 5.2), a quarter of moto's time went to
finding the service of each request (its dispatcher lists moto's own package directory and
tries every service's URL patterns, every time), and a tenth to writing the request lines of
the access log, which name no operation. The service of a host never changes, so it is looked
up once; the access log is left out (errors still reach the log).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class _Dispatcher(DomainDispatcherApplication):
    @functools.cache  # noqa: B019 - one dispatcher lives as long as the process
    def get_backend_for_host(self, host: str | None) -> Any:
        return super().get_backend_for_host(host)


class _RequestHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m headrace.dev.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto.server does: it names URLs
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: sys.exit(0))
    app = _Dispatcher(create_backend_app)
    run_simple(args.host, args.port, app, threaded=True, request_handler=_RequestHandler)


if __name__ == "__main__":
    main()
