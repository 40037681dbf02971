"""What streaming costs: the same jobs with a WebSocket subscriber each, and without.

`python -m bench.streaming [--jobs 16] [--rounds 2]` starts the local stack with one worker
on the benchmark model (GPT-2-small shape, int8), then alternates two phases on the same
job set: (1) jobs submitted over HTTP, nobody subscribed; (2) each job sent as `complete` on
its own WebSocket connection, every event read. It prints aggregate tokens/s of each, their
ratio (target: streaming costs at most 10%), and time to first token on the socket (client
send -> first stream event) as p50/p95.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.jobs import GPT2_SMALL, TINY, JobSetSpec, make_jobs, model_and_codec
from bench.through_stack import job_body, read_stream, run_jobs
from headrace.dev.stack import LocalStack

MODEL = "bench-gpt2"


async def _stream_one(
    session: aiohttp.ClientSession, ws_url: str, api_key: str, body: dict[str, Any]
) -> tuple[float, float, int]:
    """(send time, first event time, completion tokens) for one job over its own socket."""
    async with session.ws_connect(ws_url, headers={"x-api-key": api_key}) as ws:
        sent = time.monotonic()
        await ws.send_json({"action": "complete", "model": MODEL, **body})
        first, last = await read_stream(ws)
        return sent, first, int(last["output"]["num_completion_tokens"])


async def streamed_phase(
    stack: LocalStack, bodies: list[dict[str, Any]]
) -> tuple[float, list[float], int]:
    """(makespan, time-to-first-event list, tokens) with one subscriber per job."""
    async with aiohttp.ClientSession() as session:
        started = time.time()
        results = await asyncio.gather(
            *(_stream_one(session, stack.ws_url, stack.api_key, b) for b in bodies)
        )
        makespan = time.time() - started
    return makespan, [first - sent for sent, first, _ in results], sum(r[2] for r in results)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__)
    parser.add_argument("--jobs", type=int, default=16, help="concurrent jobs (default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of both phases")
    parser.add_argument("--quick", action="store_true", help="tiny model (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bench/gpu.sh)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    shape = TINY if args.quick else GPT2_SMALL
    model_dir, codec = model_and_codec(out, "bench-tiny" if args.quick else MODEL, shape)
    spec = JobSetSpec(count=args.jobs, prompt_tokens=(16, 64), max_new_tokens=(48, 64), seed=1)
    jobs = make_jobs(codec, spec)
    bodies = [job_body(j) for j in jobs]
    work = out / "runs" / time.strftime("streaming-%Y%m%d-%H%M%S")
    stack = phases.model_stack(out, work, MODEL, model_dir, args.device)
    print(f"model: {MODEL} ({shape.label}); {len(jobs)} concurrent jobs, greedy", flush=True)
    plain_rates: list[float] = []
    streamed_rates: list[float] = []
    first_events: list[float] = []
    stack.start(workers=0)
    try:
        with phases.worker(stack, {}, MODEL) as running:
            for round_ in range(args.rounds):
                result = asyncio.run(
                    run_jobs(stack.base_url, stack.api_key, MODEL, jobs, running.log)
                )
                tokens = sum(j.completion_tokens for j in result.jobs)
                plain_rates.append(tokens / result.makespan_s)
                makespan, firsts, streamed_tokens = asyncio.run(streamed_phase(stack, bodies))
                streamed_rates.append(streamed_tokens / makespan)
                first_events += firsts
                print(
                    f"round {round_ + 1}: no subscribers {plain_rates[-1]:.0f} tok/s, "
                    f"a subscriber each {streamed_rates[-1]:.0f} tok/s",
                    flush=True,
                )
    finally:
        stack.stop()
    ratio = statistics.median(s / p for s, p in zip(streamed_rates, plain_rates, strict=True))
    print(
        f"\nstreamed/unstreamed throughput = {ratio:.2f} "
        f"(target >= 0.90: {'PASS' if ratio >= 0.9 else 'FAIL'})\n"
        f"time to first token on the socket: p50 {percentile(first_events, 0.5) * 1000:.0f} ms, "
        f"p95 {percentile(first_events, 0.95) * 1000:.0f} ms ({len(first_events)} jobs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
