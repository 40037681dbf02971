"""One fuzz run: a stack, the hand cases (HTTP, then WebSocket), schemathesis, the report."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from pathlib import Path

from headrace.core import routes
from tests.suites.fuzz.http_cases import send
from tests.suites.fuzz.http_run import HttpFuzzer
from tests.suites.fuzz.schema_run import read_schemathesis, run_schemathesis
from tests.suites.fuzz.tally import Tally
from tests.suites.fuzz.ws_run import WsFuzzer
from tests.suites.stack import add_api_key, aws_clients, run_dir, start_stack

DETAIL_LINES = 12
# Valid generated jobs stay short, so a backlog never holds the streaming route past its
# request timeout; a larger max_new_tokens is a documented 400.
FUZZ_SETTINGS = {"HEADRACE_MAX_NEW_TOKENS_LIMIT": "64", "HEADRACE_SYNC_WAIT_SECONDS": "5"}


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = run_dir("fuzz", args.out)
    print(f"fuzz: logs and schemathesis output in {out}", flush=True)
    stack = start_stack(args.home, out, workers=1, settings=FUZZ_SETTINGS)
    aws = aws_clients(stack)
    tally = Tally()
    other_key = f"hr-fuzz-{secrets.token_urlsafe(12)}"
    try:
        add_api_key(stack, aws, other_key)
        http = HttpFuzzer(stack.base_url, stack.api_key, other_key, tally)
        print("fuzz: hand-made HTTP cases", flush=True)
        http.run_all()
        print("fuzz: WebSocket frames", flush=True)
        ws = WsFuzzer(stack.ws_url, stack.api_key, other_key, tally)
        ws_seconds = max(60.0, min(300.0, args.budget - (time.monotonic() - started) - 150))
        try:
            asyncio.run(
                asyncio.wait_for(ws.run_all(http.real_id, streams=args.streams), ws_seconds)
            )
        except TimeoutError:
            tally.not_run.append(f"WebSocket cases stopped after {ws_seconds:.0f}s")
        http.accepted += ws.dropped_jobs
        http.wait_for_accepted(timeout=60)
        left = args.budget - (time.monotonic() - started) - 30
        print(f"fuzz: schemathesis (at most {left:.0f}s)", flush=True)
        events = run_schemathesis(
            stack.base_url,
            stack.api_key,
            out,
            max_examples=args.max_examples,
            seed=args.seed,
            checks=args.checks,
            phases=args.phases,
            timeout=max(30.0, left),
        )
        read_schemathesis(events, tally)
        alive = send(stack.base_url, "GET", routes.MODEL_ENDPOINTS, http.keyed())
        tally.http("the gateway still answers at the end", alive.status, alive.body)
    finally:
        aws.close()
        stack.stop()
    tally.notes += _tracebacks(out / "logs")
    (out / "cases.log").write_text("\n".join(tally.transcript) + "\n")
    return report(tally, out, seconds=time.monotonic() - started)


def _tracebacks(logs: Path) -> list[str]:
    found = []
    for log in sorted(logs.glob("*.log")):
        count = log.read_text(errors="replace").count("Traceback (most recent call last)")
        if count:
            found.append(f"{log.name}: {count} tracebacks logged")
    return found


def report(tally: Tally, out: Path, *, seconds: float) -> int:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items()))
    print()
    print(f"fuzz report ({seconds:.0f}s)")
    print(f"  HTTP requests        {tally.http_requests}  ({statuses})")
    print(f"  WebSocket frames     {tally.ws_frames}")
    print(f"  5xx                  {len(tally.server_errors)}")
    print(f"  non-JSON errors      {len(tally.non_json_errors)}")
    print(f"  unanswered           {len(tally.unanswered)}")
    print(f"  wrong answers        {len(tally.wrong_answers)}")
    print(f"  accepted, then failed {len(tally.failed_jobs)}")
    print(
        f"  accepted, then refused as input {len(tally.rejected_late)} (not counted as a failure)"
    )
    print(
        f"  schemathesis checks  {sum(tally.schema_failures.values())} failed"
        f" ({len(tally.schema_failures)} distinct)"
    )
    print(f"  closed by the server {sum(tally.ws_closes.values())}")
    for title, items in (
        ("5xx", tally.server_errors),
        ("non-JSON errors", tally.non_json_errors),
        ("unanswered", tally.unanswered),
        ("wrong answers", tally.wrong_answers),
        ("accepted, then failed", tally.failed_jobs),
        ("accepted, then refused as input", tally.rejected_late),
        ("schemathesis failures", [f"{n} x {k}" for k, n in tally.schema_failures.items()]),
        ("closed by the server", [f"{n} x {k}" for k, n in tally.ws_closes.items()]),
        ("not run", tally.not_run),
        ("notes", tally.notes),
    ):
        if items:
            print(f"  {title}:")
            for item in items[:DETAIL_LINES]:
                print(f"    {item}")
            if len(items) > DETAIL_LINES:
                print(f"    ... and {len(items) - DETAIL_LINES} more")
    failing = tally.failing()
    print(f"fuzz: {'FAIL' if failing else 'PASS'} ({failing} findings)")
    print(f"fuzz: every hand case and its answer in {out / 'cases.log'}, logs in {out / 'logs'}")
    return 1 if failing else 0
