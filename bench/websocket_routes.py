"""What a job's way in costs over WebSocket against HTTP, and how soon a lone job's first event
reaches its socket.

`python -m bench.websocket_routes [--jobs 24] [--rounds 3] [--lone 20] [--quick]` starts the
local stack on the benchmark model (the tiny one with --quick). Two parts:

- **first event**, one worker: `--lone` jobs one at a time on the idle worker, alternately over
  HTTP (submit -> first token, from the worker's log) and as `complete` on a socket (send ->
  first stream event read), their ratio, and how much of the socket's wait lies outside the
  job's logged submit -> first token: the frame's handler before the job is recorded, the
  first flush's commit and the post.
- **arrival**, the worker stopped: each round submits `--jobs` jobs at once over HTTP (each
  answered 202), then as `complete` on a WebSocket each (each acknowledged, the socket closed),
  then the same with three more sockets subscribing to each job. It prints each phase's wall
  time and the CPU of the gateway (which runs the handlers), the AWS endpoint and the event
  sources, and the WebSocket phases' ratios to HTTP's within each round (medians of rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.jobs import GPT2_SMALL, TINY, Job, JobSetSpec, make_jobs, model_and_codec
from bench.streaming import percentile
from bench.through_stack import Client, LogTail, job_body, read_stream, submit_and_wait
from headrace.dev.stack import LocalStack

STACK_CPU = ("gateway", "moto", "events")


async def _acknowledged(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    async for message in ws:
        event: dict[str, Any] = json.loads(message.data)
        if event.get("type") == "accepted":
            return event
        if event.get("error"):
            raise RuntimeError(f"refused: {event['error']}")
    raise RuntimeError("the socket closed before its acknowledgement")


async def _over_http(stack: LocalStack, bodies: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, stack.base_url, stack.api_key)
        await asyncio.gather(*(client.submit(b["model"], b) for b in bodies))


async def _over_websocket(stack: LocalStack, bodies: list[dict[str, Any]], extra: int) -> None:
    headers = {"x-api-key": stack.api_key}

    async with aiohttp.ClientSession() as session:

        async def follow(request_id: str) -> None:
            async with session.ws_connect(stack.ws_url, headers=headers) as ws:
                frame = {"action": "subscribe", "request_id": request_id, "from_seq": 0}
                await ws.send_json(frame)
                await _acknowledged(ws)

        async def one(body: dict[str, Any]) -> None:
            async with session.ws_connect(stack.ws_url, headers=headers) as ws:
                await ws.send_json({"action": "complete", **body})
                accepted = await _acknowledged(ws)
            await asyncio.gather(*(follow(str(accepted["request_id"])) for _ in range(extra)))

        await asyncio.gather(*(one(b) for b in bodies))


def arrival(stack: LocalStack, bodies: list[dict[str, Any]], rounds: int) -> None:
    phases_run: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "HTTP": lambda: _over_http(stack, bodies),
        "WebSocket, 1 socket a job": lambda: _over_websocket(stack, bodies, 0),
        "WebSocket, 4 sockets a job": lambda: _over_websocket(stack, bodies, 3),
    }
    walls: dict[str, list[float]] = {name: [] for name in phases_run}
    cpus: dict[str, list[float]] = {name: [] for name in phases_run}
    for index in range(rounds):
        for name, run in phases_run.items():
            before = phases.cpu_snapshot(os.getpid())
            started = time.perf_counter()
            asyncio.run(run())
            walls[name].append(time.perf_counter() - started)
            time.sleep(1.0)  # the $disconnects the sockets' closes fired are done
            after = phases.cpu_snapshot(os.getpid())
            cpus[name].append(sum(after[k] - before[k] for k in STACK_CPU))
        print(
            f"round {index + 1}: "
            + ", ".join(f"{n} {walls[n][-1]:.2f} s, CPU {cpus[n][-1]:.2f} s" for n in phases_run),
            flush=True,
        )
    print(f"\narrival of {len(bodies)} jobs at once, no worker; medians of {rounds} rounds:")
    print("| way in | wall | gateway, endpoint, event sources CPU | wall vs HTTP | CPU vs HTTP |")
    print("| --- | --- | --- | --- | --- |")
    for name in phases_run:
        wall_ratio = statistics.median(
            w / h for w, h in zip(walls[name], walls["HTTP"], strict=True)
        )
        cpu_ratio = statistics.median(c / h for c, h in zip(cpus[name], cpus["HTTP"], strict=True))
        print(
            f"| {name} | {statistics.median(walls[name]):.2f} s | "
            f"{statistics.median(cpus[name]):.2f} s | {wall_ratio:.2f} | {cpu_ratio:.2f} |"
        )


async def _first_event(stack: LocalStack, body: dict[str, Any]) -> tuple[float, str]:
    """(send -> first stream event, request id) of one job as `complete` on a socket."""
    headers = {"x-api-key": stack.api_key}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(stack.ws_url, headers=headers) as ws,
    ):
        sent = time.monotonic()
        await ws.send_json({"action": "complete", **body})
        accepted: list[str] = []
        first, _ = await read_stream(ws, on_accepted=lambda a: accepted.append(a["request_id"]))
        return first - sent, accepted[0]


def _logged_first_token(log: LogTail, request_id: str, timeout_s: float = 30.0) -> float:
    """The job's submit -> first token (seconds) as the worker logged it when it finished."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in log.read():
            if record.get("request_id") == request_id and record.get("message") == "job succeeded":
                return float(record["submit_to_first_token_ms"]) / 1000
        time.sleep(0.05)
    raise TimeoutError(f"no log line for {request_id}")


def first_events(stack: LocalStack, model: str, jobs: list[Job]) -> None:
    over_http, logged_socket, over_socket = [], [], []
    with phases.worker(stack, {}, model) as running:
        for job in jobs:
            time.sleep(0.5)  # the worker is back in its long poll, nothing held
            result = asyncio.run(
                submit_and_wait(stack.base_url, stack.api_key, model, job, running.log)
            )
            if result.ttft_s is not None:
                over_http.append(result.ttft_s)
            time.sleep(0.5)
            waited, request_id = asyncio.run(_first_event(stack, {"model": model, **job_body(job)}))
            over_socket.append(waited)
            logged_socket.append(_logged_first_token(running.log, request_id))
    http, socket = statistics.median(over_http), statistics.median(over_socket)
    extra = statistics.median(w - d for w, d in zip(over_socket, logged_socket, strict=True))
    p95 = percentile(over_socket, 0.95)
    print(
        f"a lone job on an idle worker, {len(jobs)} of each, p50: over HTTP submit -> first "
        f"token {http * 1000:.0f} ms (the worker's log); over WebSocket send -> first event "
        f"{socket * 1000:.0f} ms (p95 {p95 * 1000:.0f} ms), {socket / http:.2f}"
        f" times HTTP's; of it, beyond the job's logged submit -> first token, {extra * 1000:.0f}"
        " ms (the frame's handler before the job is recorded, the first flush's commit, the post)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.websocket_routes", description=__doc__)
    parser.add_argument("--jobs", type=int, default=24, help="jobs at once (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of arrival (default 3)")
    parser.add_argument("--lone", type=int, default=20, help="lone jobs each way (default 20)")
    parser.add_argument("--quick", action="store_true", help="tiny model (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    model, shape = ("bench-tiny", TINY) if args.quick else ("bench-gpt2", GPT2_SMALL)
    model_dir, codec = model_and_codec(out, model, shape)
    spec = JobSetSpec(count=args.jobs, prompt_tokens=(16, 64), max_new_tokens=(32, 64), seed=2)
    bodies = [{"model": model, **job_body(j)} for j in make_jobs(codec, spec)]
    lone = JobSetSpec(count=args.lone, prompt_tokens=(16, 24), max_new_tokens=(4, 4), seed=3)
    work = out / "runs" / time.strftime("websocket-routes-%Y%m%d-%H%M%S")
    stack = phases.model_stack(out, work, model, model_dir)
    print(f"model: {model} ({shape.label})", flush=True)
    stack.start(workers=0)
    try:
        # The lone jobs first: the arrival's jobs stay queued, with no worker after it.
        first_events(stack, model, make_jobs(codec, lone))
        arrival(stack, bodies, args.rounds)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
