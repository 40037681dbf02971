"""How soon a cancel stops a running job: from the cancel request to the item leaving its batch.

`python -m bench.cancel [--cancels 20] [--rounds 3] [--check-ms 500]` starts the local stack
with one worker on the benchmark model (GPT-2-small shape, int8; `--quick`: the dev model, a
few cancels, one round, to check the harness). Each cancel: a long greedy job is submitted over
HTTP; once its first event is stored (it decodes) and a seeded random pause has passed (so the
cancels fall anywhere between two of the worker's checks), `POST .../cancel` is sent. The
worker logs when the engine's callback stopped the item (`stopped_at`: the same clock, one
machine). Measured in the same run, as the baseline the delay is made of: the worker's check
interval (HEADRACE_CANCEL_CHECK_MS: a cancel waits half of it on average), one decode step (the
job's tokens over its decoding time) and the cancel call's own round trip. It prints each
round's p50/p95 and the medians of the rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3

from bench import phases
from bench.jobs import GPT2_SMALL, ensure_model
from bench.streaming import percentile
from bench.through_stack import LogTail, log_time
from headrace.core.tables import streams as stream_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import LocalStack, StackOptions

MODEL = "bench-gpt2"
T = TypeVar("T")


class WorkerLog:
    """The worker's log lines by request id (a "batch started" line under each of its jobs)."""

    def __init__(self, tail: LogTail) -> None:
        self.tail = tail
        self.by_request: dict[str, list[dict[str, Any]]] = {}

    def lines(self, request_id: str, message: str) -> list[dict[str, Any]]:
        for record in self.tail.read():
            for owner in [record.get("request_id"), *record.get("requests", [])]:
                self.by_request.setdefault(str(owner), []).append(record)
        return [r for r in self.by_request.get(request_id, []) if r["message"] == message]


def call(stack: LocalStack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(stack.base_url + path, data=data, method=method)
    request.add_header("x-api-key", stack.api_key)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read())


def until(found: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (value := found()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout:g}s")
        time.sleep(0.005)
    return value


def one_cancel(
    stack: LocalStack, dynamodb: Any, log: WorkerLog, model: str, tokens: int, pause: float
) -> dict[str, float] | None:
    """One job cancelled mid-run: its delays in seconds; None if it ended before the cancel."""
    assert stack.resources is not None
    body = {"prompt": "The river runs past the mill", "max_new_tokens": tokens, "temperature": 0}
    _, answer = call(stack, "POST", f"/v1/llm/completions-async?model_endpoint_name={model}", body)
    request_id = answer["request_id"]
    query = stream_table.query_chunks(stack.resources.table_name, request_id)
    until(lambda: dynamodb.query(**query)["Items"], 120, "first event")
    time.sleep(pause)
    sent = time.time()
    status, _ = call(stack, "POST", f"/v1/llm/completions/{request_id}/cancel")
    answered = time.time()
    path = f"/v1/llm/completions/{request_id}"
    job = until(lambda: (j := call(stack, "GET", path)[1])["status"] != "RUNNING" and j, 60, "end")
    seen = time.time()
    if status != 202 or job["status"] != "CANCELLED":
        return None
    (ended,) = until(lambda: log.lines(request_id, "job cancelled"), 30, "log line")
    started = log_time(log.lines(request_id, "batch started")[0])
    stopped = float(ended["stopped_at"])
    return {
        "stop": stopped - sent,
        "stored": seen - sent,
        "round_trip": answered - sent,
        "step": (stopped - started) / max(1, int(ended["completion_tokens"])),
    }


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: n/a"
    p50, p95 = percentile(values, 0.5) * 1000, percentile(values, 0.95) * 1000
    return f"{label}: p50 {p50:.0f} ms, p95 {p95:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cancel", description=__doc__)
    parser.add_argument("--cancels", type=int, default=20, help="cancels per round (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with its p50/p95")
    parser.add_argument("--check-ms", type=int, default=500, help="HEADRACE_CANCEL_CHECK_MS")
    parser.add_argument("--quick", action="store_true", help="dev model, 3 cancels, 1 round")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    cancels, rounds = (3, 1) if args.quick else (args.cancels, args.rounds)
    out = args.out.resolve()
    settings = {
        "HEADRACE_CANCEL_CHECK_MS": str(args.check_ms),
        "HEADRACE_RECEIVE_WAIT_SECONDS": str(phases.RECEIVE_WAIT_S),
    }
    # Seconds of decoding on either model (the dev model's whole context: it is fast).
    model, tokens = DEV_MODEL_NAME, 4000
    settings["HEADRACE_MAX_NEW_TOKENS_LIMIT"] = str(tokens)
    if not args.quick:
        model_dir = ensure_model(out / "models" / MODEL, GPT2_SMALL)
        model, tokens = MODEL, 900
        settings |= {
            "HEADRACE_MODEL_ZOO": json.dumps({MODEL: str(model_dir)}),
            "HEADRACE_WORKER_MODELS": MODEL,
            "HEADRACE_DEVICE": "cpu",
            "HEADRACE_COMPUTE_TYPE": "int8",
        }
    work = out / "runs" / time.strftime("cancel-%Y%m%d-%H%M%S")
    stack = LocalStack(
        StackOptions(
            home=(out / "home").resolve(),
            gateway_port=0,
            logs_dir=work / "logs",
            settings_env=settings,
        )
    )
    print(f"model: {model}; {rounds} rounds of {cancels} cancels; check every {args.check_ms} ms")
    rng = random.Random(15)
    results: list[list[dict[str, float]]] = []
    stack.start(workers=0)
    try:
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        dynamodb = session.client("dynamodb", endpoint_url=stack.aws_endpoint_url)
        with phases.worker(stack, {}, model) as running:
            log = WorkerLog(running.log)
            for round_ in range(rounds):
                done = []
                for _ in range(cancels):
                    pause = rng.uniform(0, args.check_ms / 1000)
                    measured = one_cancel(stack, dynamodb, log, model, tokens, pause)
                    if measured is not None:
                        done.append(measured)
                results.append(done)
                stops = [m["stop"] for m in done]
                print(f"round {round_ + 1}: {summary('cancel -> item stopped', stops)}", flush=True)
    finally:
        stack.stop()
    report(results, args.check_ms, cancels * rounds)
    return 0


def report(results: list[list[dict[str, float]]], check_ms: int, tried: int) -> None:
    def median_of_rounds(key: str, q: float) -> float | None:
        per_round = [percentile([m[key] for m in r], q) for r in results if r]
        return statistics.median(per_round) * 1000 if per_round else None

    flat = [m for r in results for m in r]
    print(f"\n{len(flat)} of {tried} jobs cancelled while decoding (the rest ended first)")
    for key, label in (
        ("stop", "cancel -> item stopped"),
        ("stored", "cancel -> CANCELLED seen by a poller"),
        ("round_trip", "cancel call round trip"),
    ):
        p50, p95 = median_of_rounds(key, 0.5), median_of_rounds(key, 0.95)
        shown = f"p50 {p50:.0f} ms, p95 {p95:.0f} ms" if p50 is not None else "n/a"
        print(f"{label}: {shown} (medians of {len(results)} rounds)")
    step = statistics.median(m["step"] for m in flat) * 1000 if flat else None
    stop = median_of_rounds("stop", 0.5)
    if step is not None and stop is not None:
        expected = check_ms / 2 + step
        print(
            f"baseline, same run: check interval {check_ms} ms, decode step {step:.1f} ms;"
            f" cancel -> stop p50 / (interval/2 + step) = {stop / expected:.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
