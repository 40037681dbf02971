"""What a batch backlog costs an interactive job: its time to first token behind one, against idle.

`python -m bench.lanes [--backlog 1000] [--runs 3]` starts the local stack with one worker on
the benchmark model (GPT-2-small shape, int8; `--quick`: the tiny one), then, each run:

1. idle: interactive probes one after another, each sent as `complete` on its own WebSocket
   connection, time from send to the first stream event;
2. `--backlog` jobs with `priority: "batch"` submitted over HTTP (16 at a time); once the worker
   has finished one of them (it is busy), the same interactive probes; then one probe in the
   batch lane, which is what every job would get with a single first-in-first-out queue;
3. the backlog drains before the next run.

It prints the medians of each kind of probe and their ratios to idle, measured within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.jobs import GPT2_SMALL, TINY, JobSetSpec, make_jobs, model_and_codec
from bench.streaming import percentile
from bench.through_stack import job_body, read_stream
from headrace.dev.stack import LocalStack

MODEL = "bench-gpt2"
SUBMITTERS = 16


@dataclass
class Probes:
    idle: list[float] = field(default_factory=list)
    behind_batch: list[float] = field(default_factory=list)
    batch_lane: list[float] = field(default_factory=list)


async def first_token_s(
    session: aiohttp.ClientSession, stack: LocalStack, body: dict[str, Any]
) -> float:
    """Seconds from sending `complete` to the job's first stream event (the rest is read)."""
    async with session.ws_connect(stack.ws_url, headers={"x-api-key": stack.api_key}) as ws:
        sent = time.monotonic()
        await ws.send_json({"action": "complete", "model": MODEL, **body})
        first, _ = await read_stream(ws)
        return first - sent


async def submit_backlog(
    session: aiohttp.ClientSession, stack: LocalStack, bodies: list[dict[str, Any]]
) -> list[str]:
    url = f"{stack.base_url}/v1/llm/completions-async?model_endpoint_name={MODEL}"
    headers = {"x-api-key": stack.api_key}
    pending = iter(bodies)
    ids: list[str] = []

    async def submitter() -> None:
        for body in pending:
            async with session.post(url, json={**body, "priority": "batch"}, headers=headers) as r:
                answer = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"backlog submit answered {r.status}: {answer}")
                ids.append(answer["request_id"])

    await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return ids


async def status_of(session: aiohttp.ClientSession, stack: LocalStack, request_id: str) -> str:
    url = f"{stack.base_url}/v1/llm/completions/{request_id}"
    async with session.get(url, headers={"x-api-key": stack.api_key}) as answer:
        return str((await answer.json())["status"])


async def wait_final(session: aiohttp.ClientSession, stack: LocalStack, request_id: str) -> None:
    while await status_of(session, stack, request_id) in ("QUEUED", "RUNNING"):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def one_run(
    stack: LocalStack,
    probe: dict[str, Any],
    backlog: list[dict[str, Any]],
    probes: int,
    into: Probes,
) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(probes):
            into.idle.append(await first_token_s(session, stack, probe))
        ids = await submit_backlog(session, stack, backlog)
        await wait_final(session, stack, ids[0])  # the worker is busy with the backlog now
        for _ in range(probes):
            into.behind_batch.append(await first_token_s(session, stack, probe))
        into.batch_lane.append(await first_token_s(session, stack, {**probe, "priority": "batch"}))
        async with asyncio.timeout(3600):
            for request_id in ids:
                await wait_final(session, stack, request_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lanes", description=__doc__)
    parser.add_argument("--backlog", type=int, default=1000, help="batch jobs (default 1000)")
    parser.add_argument("--probes", type=int, default=3, help="interactive probes per phase")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny model (checks the harness)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    shape = TINY if args.quick else GPT2_SMALL
    model_dir, codec = model_and_codec(out, "bench-tiny" if args.quick else MODEL, shape)
    spec = JobSetSpec(count=args.backlog, prompt_tokens=(16, 64), max_new_tokens=(32, 32), seed=2)
    backlog = [job_body(j) for j in make_jobs(codec, spec)]
    probe_spec = JobSetSpec(count=1, prompt_tokens=(32, 32), max_new_tokens=(16, 16), seed=3)
    probe = job_body(make_jobs(codec, probe_spec)[0])
    work = out / "runs" / time.strftime("lanes-%Y%m%d-%H%M%S")
    stack = phases.model_stack(out, work, MODEL, model_dir)
    print(
        f"model: {MODEL} ({shape.label}); backlog of {args.backlog} batch jobs "
        f"(32 new tokens each); probe: 32 prompt tokens, 16 new",
        flush=True,
    )
    probes = Probes()
    stack.start(workers=0)
    try:
        with phases.worker(stack, {}, MODEL):
            for run in range(args.runs):
                asyncio.run(one_run(stack, probe, backlog, args.probes, probes))
                print(
                    f"run {run + 1}: idle {probes.idle[-1] * 1000:.0f} ms, behind the backlog "
                    f"{probes.behind_batch[-1] * 1000:.0f} ms, in the batch lane "
                    f"{probes.batch_lane[-1]:.1f} s",
                    flush=True,
                )
    finally:
        stack.stop()
    idle = statistics.median(probes.idle)
    behind = statistics.median(probes.behind_batch)
    fifo = statistics.median(probes.batch_lane)
    print(
        f"\ninteractive time to first token (median of {len(probes.idle)}):\n"
        f"  idle worker               {idle * 1000:8.0f} ms\n"
        f"  behind {args.backlog} batch jobs   {behind * 1000:8.0f} ms  "
        f"(x{behind / idle:.1f} idle; p95 {percentile(probes.behind_batch, 0.95) * 1000:.0f} ms)\n"
        f"  in the batch lane (FIFO)  {fifo * 1000:8.0f} ms  (x{fifo / idle:.0f} idle)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
