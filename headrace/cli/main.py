"""`headrace`: the local stack, the worker and the local gateway from one command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from headrace.core.logs import configure_logging

if TYPE_CHECKING:
    from headrace.dev.autoscaler import LocalAutoscaler
    from headrace.dev.stack import LocalStack

logger = logging.getLogger("headrace.cli.main")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headrace", description="Queue-driven LLM completions: local stack, worker, tools."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    dev = commands.add_parser(
        "dev",
        help="start the whole stack locally (AWS endpoint, gateway, worker) and serve completions",
        description="Start moto, create the resources of template.yaml, build and upload the dev "
        "model, start the local gateway and a worker (replaced if it exits). Ctrl-C stops "
        "everything.",
    )
    dev.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (default: %(default)s)"
    )
    dev.add_argument("--port", type=int, default=8080, help="gateway port (default: %(default)s)")
    dev.add_argument("--workers", type=int, default=None, help="worker processes (default: 1)")
    scaling = dev.add_argument_group(
        "autoscaling",
        "With --max-workers, workers follow the backlog by the rule the template deploys "
        '(README "How the fleet scales"): none while idle, one as soon as a job waits, more '
        "as the backlog per worker passes --target-backlog, idle ones stopped after "
        "--scale-in-after seconds.",
    )
    scaling.add_argument("--max-workers", type=int, default=None, help="most workers at once")
    scaling.add_argument(
        "--min-workers", type=int, default=0, help="fewest workers, even idle (default: 0)"
    )
    scaling.add_argument(
        "--scale-in-after",
        type=float,
        default=30.0,
        help="seconds of a smaller backlog before workers are stopped (default: %(default)s)",
    )
    scaling.add_argument(
        "--target-backlog",
        type=float,
        default=16.0,
        help="jobs waiting or running per worker before another starts: a CPU worker's batch "
        "width (default: %(default)s)",
    )
    dev.set_defaults(run=_run_dev)

    worker = commands.add_parser(
        "worker",
        help="run a GPU/CPU worker: consume the jobs queue and decode with CTranslate2",
        description="Settings come from HEADRACE_* environment variables (see the README).",
    )
    worker.set_defaults(run=_run_worker)

    gateway = commands.add_parser(
        "gateway",
        help="serve the HTTP routes of template.yaml locally (part of `headrace dev`)",
        description="Play API Gateway: payload-2.0 events to the handler functions, in-process.",
    )
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)
    gateway.set_defaults(run=_run_gateway)

    from headrace.cli import client_commands, event_commands, key_commands

    client_commands.register(commands)
    key_commands.register(commands)
    event_commands.register(commands)
    return parser


def _run_worker(args: argparse.Namespace) -> int:
    from worker.app import main as worker_main

    return worker_main()


def _run_gateway(args: argparse.Namespace) -> int:
    from aiohttp import web

    from handlers import openai_stream_app
    from headrace.api.openapi import openapi_document
    from headrace.core import routes
    from headrace.core.settings import Settings
    from headrace.dev import sse_route
    from headrace.dev.gateway import LocalGateway
    from headrace.dev.websocket import LocalWebSocketApi

    configure_logging(Settings().log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        websocket = LocalWebSocketApi.from_template()
        websocket.resolve_all()

        async def openapi(request: web.Request) -> web.Response:
            return web.json_response(openapi_document())

        gateway = LocalGateway.from_template(
            streaming_routes=openai_stream_app.streaming_routes(),
            extra_routes=[
                *websocket.route_defs(),
                *sse_route.route_defs(),
                web.get(routes.OPENAPI, openapi),
            ],
        )
        gateway.resolve_all()
        await gateway.start(args.host, args.port)
        try:
            await stop.wait()
        finally:
            await websocket.close_all()
            await gateway.stop()

    asyncio.run(serve())
    return 0


def _run_dev(args: argparse.Namespace) -> int:
    from headrace.dev.stack import LocalStack, StackError, StackOptions

    autoscaling = args.max_workers is not None
    if autoscaling and not 0 <= args.min_workers <= args.max_workers:
        print("headrace: need 0 <= --min-workers <= --max-workers", file=sys.stderr)
        return 2
    if autoscaling and args.workers is not None:
        print("headrace: --workers is fixed; --max-workers scales: give one", file=sys.stderr)
        return 2
    configure_logging("INFO")
    started = time.monotonic()
    stack = LocalStack(StackOptions(host=args.host, gateway_port=args.port, log_to_files=False))
    stop_requested = False
    autoscaler: LocalAutoscaler | None = None

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    # Explicit handlers: a shell may start us with SIGINT ignored (background jobs), and
    # Ctrl-C, a closed terminal and SIGTERM must all stop the stack in order.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        print("Starting Headrace locally…", file=sys.stderr, flush=True)
        stack.start(workers=0 if autoscaling else (args.workers or 1))
        if stop_requested:
            return 0
        if autoscaling:
            autoscaler = _autoscaler(stack, args)
        state_path = stack.write_state()
        _print_banner(stack, time.monotonic() - started, str(state_path))
        if autoscaler is not None:
            print(_scaling_note(args), flush=True)
        while not stop_requested:
            if autoscaler is not None:
                autoscaler.tick()  # replaces a worker that dies too
            else:
                stack.replace_dead_workers()  # as ECS would: one worker's crash is not the stack's
            time.sleep(0.5)
        return 0
    except StackError as e:
        print(f"headrace: the local stack did not start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            print("\nStopping…", file=sys.stderr, flush=True)
            stack.remove_state()
            if autoscaler is not None:
                autoscaler.stop()
            stack.stop()


def _autoscaler(stack: LocalStack, args: argparse.Namespace) -> LocalAutoscaler:
    from headrace.dev.autoscaler import LocalAutoscaler, local_policy

    policy = local_policy(
        min_workers=args.min_workers,
        max_workers=args.max_workers,
        scale_in_after=args.scale_in_after,
        target_backlog=args.target_backlog,
    )
    return LocalAutoscaler.for_stack(stack, policy)


def _scaling_note(args: argparse.Namespace) -> str:
    return (
        f"Workers follow the backlog: {args.min_workers} to {args.max_workers}, one started as "
        f"soon as a job waits, idle ones stopped after {args.scale_in_after:g} s.\n"
    )


def _print_banner(stack: object, seconds: float, state_path: str) -> None:
    from headrace.dev.stack import LocalStack

    assert isinstance(stack, LocalStack)
    model = next(iter(stack.model_zoo))
    print(
        f"""
Headrace is ready in {seconds:.1f}s.

  Base URL   {stack.base_url}
  API key    {stack.api_key}
  Key id     {_key_id(stack.api_key)}  (what events and intake messages name)
  Model      {model}
  AWS        {stack.aws_endpoint_url}  (moto server)
  Recorded   {state_path}  (the CLI and the Python client read it)

Try it:

  curl -s -X POST '{stack.base_url}/v1/llm/completions-sync?model_endpoint_name={model}' \\
    -H 'x-api-key: {stack.api_key}' -H 'content-type: application/json' \\
    -d '{{"prompt": "The river", "max_new_tokens": 40, "temperature": 0}}'

Ctrl-C stops everything.
""",
        flush=True,
    )


def _key_id(api_key: str) -> str:
    from headrace.core.key_ids import public_key_id
    from headrace.core.tables.jobs import hash_api_key

    return public_key_id(hash_api_key(api_key))


if __name__ == "__main__":
    sys.exit(main())
