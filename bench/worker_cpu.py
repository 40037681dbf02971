"""The worker's own CPU per generated token, and the ceiling it puts on a GPU worker.

`python -m bench.worker_cpu [--jobs 24] [--rounds 3] [--quick]` starts the local stack with
the AWS endpoint, the gateway, the event sources and this client on one core and one worker on
the other (a process inherits its parent's CPU affinity, so each is started while this process
is pinned to its core), all on the benchmark model. Each round runs, on the same job set:

- **unstreamed**: jobs submitted over HTTP, nobody subscribed, results polled;
- **1 subscriber**: each job sent as `complete` on its own WebSocket, every event read;
- **4 subscribers**: the same, and three more sockets `subscribe` to each job;
- **engine alone**: CTranslate2 (`worker.engine.Engine`, one replica, one thread, pinned to the
  worker's core) decoding the very batches the worker made of the unstreamed jobs (from its
  "batch started" lines), with a callback that does nothing; again until a second has gone,
  the median of its passes.

The worker's CPU is its process's user + system time over the phase (/proc/<pid>/stat): it
holds the engine's decoding (on a CPU machine the decode runs in that process) and everything
of Headrace's. The engine alone's CPU per token is the decode's share; the difference is the
worker's own overhead per token, which on a GPU (where the decode leaves the CPU) is what
bounds how fast one worker can feed its card: at most 1 / overhead tokens per second.
Ratios are taken within a round; the table shows medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench import phases
from bench.cpu_report import Phase, Round, print_table, print_verdicts
from bench.jobs import (
    GPT2_SMALL,
    TINY,
    Job,
    JobSetSpec,
    ModelShape,
    make_jobs,
    model_and_codec,
)
from bench.procinfo import cpu_seconds, machine
from bench.profile import Sampler, summarize
from bench.through_stack import PhaseResult, job_body, read_stream, run_jobs
from headrace.dev.stack import LocalStack
from worker.decoding import TextCodec
from worker.engine import Engine, EngineConfig, SamplingParams, Step

GREEDY = SamplingParams(top_k=1)
ENGINE_ALONE_S = 1.0  # the engine alone decodes a round's batches for at least this long
# The decode rate of the benchmark model measured on a data-centre card: the engine limit of
# `bench/gpu.sh` (README "On a GPU"), to set the ceiling against.
GPU_DECODE_RATE: str = (
    "3,400-4,700 tokens/s on an NVIDIA H200 (the engine limit of python -m bench's 64 jobs, "
    "CTranslate2 int8, bench/gpu.sh on 2026-12-04; README 'On a GPU')"
)


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` on `cores` (sched_setaffinity on a pid moves only its main one)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


@contextmanager
def started_on(cores: set[int]) -> Iterator[None]:
    """Processes started in this block inherit `cores`; this process gets its own back after."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)


async def _stream_one(
    session: aiohttp.ClientSession, stack: LocalStack, body: dict[str, Any], extra: int
) -> tuple[float, int]:
    """(time of the last event, completion tokens) of one job followed by 1 + `extra` sockets."""
    headers = {"x-api-key": stack.api_key}
    async with session.ws_connect(stack.ws_url, headers=headers) as ws:
        await ws.send_json({"action": "complete", **body})
        others: list[asyncio.Task[None]] = []

        def follow(accepted: dict[str, Any]) -> None:
            request_id = str(accepted["request_id"])
            others.extend(
                asyncio.create_task(_subscriber(session, stack, request_id)) for _ in range(extra)
            )

        _, last = await read_stream(ws, on_accepted=follow)
        await asyncio.gather(*others)
        return time.time(), int(last["output"]["num_completion_tokens"])


async def _subscriber(session: aiohttp.ClientSession, stack: LocalStack, request_id: str) -> None:
    async with session.ws_connect(stack.ws_url, headers={"x-api-key": stack.api_key}) as ws:
        await ws.send_json({"action": "subscribe", "request_id": request_id, "from_seq": 0})
        await read_stream(ws)


async def _streamed(
    stack: LocalStack, bodies: list[dict[str, Any]], followers: int
) -> tuple[float, int]:
    """(makespan, tokens) of every job at once, each followed by `followers` sockets."""
    async with aiohttp.ClientSession() as session:
        started = time.time()
        ends = await asyncio.gather(
            *(_stream_one(session, stack, b, followers - 1) for b in bodies)
        )
    return max(end for end, _ in ends) - started, sum(tokens for _, tokens in ends)


def measure(stack: LocalStack, worker_pid: int, name: str, run: Any) -> tuple[Phase, Any]:
    before, loop_before = phases.cpu_snapshot(worker_pid), _main_thread_cpu(worker_pid)
    makespan, tokens, detail = run()
    after, loop_after = phases.cpu_snapshot(worker_pid), _main_thread_cpu(worker_pid)
    others = sum(after[k] - before[k] for k in ("moto", "gateway", "events"))
    worker = after["worker"] - before["worker"]
    phase = Phase(name, tokens, makespan, worker, loop_after - loop_before, others)
    return phase, detail


def _main_thread_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_batches(result: PhaseResult, jobs: list[Job]) -> list[list[Job]]:
    """The batches the worker made, as jobs (from its "batch started" lines)."""
    by_request = {r.request_id: jobs[r.index] for r in result.jobs}
    return [
        [by_request[rid] for rid in record.get("requests", []) if rid in by_request]
        for record in result.batches
    ]


def engine_alone(
    engine: Engine, codec: TextCodec, batches: list[list[Job]]
) -> tuple[float, int, float]:
    """(CPU seconds, tokens, wall seconds) of the engine decoding `batches`, its callback only
    counting (each item stops at its own limit, as in the worker)."""
    counts: list[int] = []

    def on_step(step: Step, limits: list[int]) -> bool:
        counts[step.index] += 1
        return counts[step.index] >= limits[step.index]

    prompts = [[codec.prompt_tokens(j.prompt) for j in batch] for batch in batches if batch]
    tokens = 0
    cpu, wall = cpu_seconds(), time.perf_counter()
    for batch, batch_prompts in zip([b for b in batches if b], prompts, strict=True):
        limits = [j.max_new_tokens for j in batch]
        counts[:] = [0] * len(batch)
        engine.generate(
            batch_prompts,
            params=GREEDY,
            max_new_tokens=max(limits),
            # Random weights may pick the end token: every job runs its full length.
            min_new_tokens=max(limits),
            return_log_probs=False,
            on_step=functools.partial(on_step, limits=limits),
        )
        tokens += sum(counts)
    return cpu_seconds() - cpu, tokens, time.perf_counter() - wall


@dataclass(frozen=True)
class Setup:
    model: str
    shape: ModelShape
    label: str
    # Also the unstreamed jobs this many times longer (0: not), which splits the worker's
    # overhead into a part per token and a part per job.
    longer: int = 0


FAST = Setup("bench-tiny", TINY, "a fast decoder (the tiny model): the worker's own cost", 4)
BENCHMARK = Setup("bench-gpt2", GPT2_SMALL, "the benchmark model on the CPU split")


def one_round(
    stack: LocalStack,
    running: phases.Worker,
    model: str,
    engine: Engine,
    codec: TextCodec,
    jobs: list[Job],
    worker_cores: set[int],
    longer_jobs: list[Job] | None = None,
    streams: bool = True,
) -> Round:
    pid = running.process.pid
    bodies = [{"model": model, **job_body(j)} for j in jobs]

    def plain(job_set: list[Job]) -> Any:
        def run() -> tuple[float, int, PhaseResult]:
            result = asyncio.run(
                run_jobs(stack.base_url, stack.api_key, model, job_set, running.log)
            )
            failed = [j for j in result.jobs if j.status != "SUCCEEDED"]
            if failed:
                raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
            return result.makespan_s, sum(j.completion_tokens for j in result.jobs), result

        return run

    def streamed(followers: int) -> Any:
        return lambda: (*asyncio.run(_streamed(stack, bodies, followers)), None)

    def alone(result: PhaseResult, job_set: list[Job]) -> tuple[float, float]:
        batches = worker_batches(result, job_set)
        per_token: list[float] = []
        rates: list[float] = []
        spent = 0.0
        with started_on(worker_cores):
            # A fast decoder's pass takes a fraction of a second, whose CPU per token scattered
            # by half between rounds: passes until ENGINE_ALONE_S have gone, their median.
            while not per_token or spent < ENGINE_ALONE_S:
                cpu, tokens, wall = engine_alone(engine, codec, batches)
                per_token.append(cpu / tokens)
                rates.append(tokens / wall)
                spent += wall
        return statistics.median(per_token), statistics.median(rates)

    unstreamed, result = measure(stack, pid, "unstreamed", plain(jobs))
    phases_run = [unstreamed]
    if streams:
        phases_run.append(measure(stack, pid, "1 subscriber", streamed(1))[0])
        phases_run.append(measure(stack, pid, "4 subscribers", streamed(4))[0])
    engine_cpu, engine_rate = alone(result, jobs)
    engine_cpus = [engine_cpu] * len(phases_run)
    if longer_jobs:
        factor = longer_jobs[0].max_new_tokens // jobs[0].max_new_tokens
        name = f"unstreamed, jobs {factor}x longer"
        longer, longer_result = measure(stack, pid, name, plain(longer_jobs))
        phases_run.append(longer)
        engine_cpus.append(alone(longer_result, longer_jobs)[0])
    return Round(phases_run, engine_cpus, engine_rate)


@dataclass(frozen=True)
class Plan:
    rounds: int
    jobs: int
    worker_cores: set[int]
    other_cores: set[int]
    out: Path
    work: Path
    profile: bool
    streams: bool = True


def run_setup(setup: Setup, plan: Plan) -> list[Round]:
    """A stack serving `setup`'s model, one worker on its core, `plan.rounds` rounds."""
    model_dir, codec = model_and_codec(plan.out, setup.model, setup.shape)
    spec = JobSetSpec(count=plan.jobs, prompt_tokens=(16, 64), max_new_tokens=(32, 64), seed=2)
    jobs = make_jobs(codec, spec)
    work = plan.work / setup.model
    stack = phases.model_stack(plan.out, work, setup.model, model_dir)
    # The worker has one core: one replica of one thread.
    stack.options.settings_env |= {"HEADRACE_INTER_THREADS": "1", "HEADRACE_INTRA_THREADS": "1"}
    print(
        f"\n{setup.label}: {setup.model} ({setup.shape.label}); {len(jobs)} concurrent jobs, "
        f"greedy, {sum(j.max_new_tokens for j in jobs)} tokens",
        flush=True,
    )
    rounds: list[Round] = []
    with started_on(plan.worker_cores):
        engine = Engine(model_dir, EngineConfig("cpu", "int8", 1, 1))
    try:
        stack.start(workers=0)
        with started_on(plan.worker_cores), phases.worker(stack, {}, setup.model) as running:
            pin(running.process.pid, plan.worker_cores)
            os.sched_setaffinity(0, plan.other_cores)
            stacks = work / "worker-stacks.txt"
            sampler = Sampler(running.process.pid, stacks) if plan.profile else None
            for index in range(plan.rounds):
                longer = [replace(j, max_new_tokens=j.max_new_tokens * setup.longer) for j in jobs]
                rounds.append(
                    one_round(
                        stack,
                        running,
                        setup.model,
                        engine,
                        codec,
                        jobs,
                        plan.worker_cores,
                        longer if setup.longer else None,
                        streams=plan.streams,
                    )
                )
                line = ", ".join(
                    f"{p.name} {p.rate:.0f} tok/s {p.cpu_per_token * 1000:.3f} ms CPU/token"
                    for p in rounds[-1].phases
                )
                print(
                    f"round {index + 1}: {line}; engine alone {rounds[-1].engine_rate:.0f} tok/s "
                    f"{rounds[-1].engine_cpu[0] * 1000:.3f} ms; "
                    f"load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            if sampler is not None:
                sampler.stop()
                print("\n".join(summarize(sampler.output)))
    finally:
        stack.stop()
        engine.close()
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_cpu", description=__doc__)
    parser.add_argument("--jobs", type=int, help="concurrent jobs (default 24, --quick 8)")
    parser.add_argument("--rounds", type=int, help="rounds of the phases (default 3, --quick 1)")
    parser.add_argument(
        "--quick", action="store_true", help="the fast model only (8 jobs, 1 round by default)"
    )
    parser.add_argument("--worker-core", type=int, default=0, help="the worker's core")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument(
        "--profile", action="store_true", help="sample the worker with py-spy (perturbs it)"
    )
    parser.add_argument(
        "--no-streams", action="store_true", help="unstreamed phases only (to profile them)"
    )
    args = parser.parse_args(argv)
    cores = os.sched_getaffinity(0)
    if args.worker_core not in cores or len(cores) < 2:
        parser.error(f"needs the worker's core and another among {sorted(cores)}")
    out = args.out.resolve()
    plan = Plan(
        rounds=args.rounds or (1 if args.quick else 3),
        jobs=args.jobs or (8 if args.quick else 24),
        worker_cores={args.worker_core},
        other_cores=cores - {args.worker_core},
        out=out,
        work=out / "runs" / time.strftime("worker-cpu-%Y%m%d-%H%M%S"),
        profile=args.profile,
        streams=not args.no_streams,
    )
    print(f"machine: {machine()}", flush=True)
    print(
        f"worker on core {args.worker_core}; AWS endpoint, gateway and client on "
        f"{sorted(plan.other_cores)}",
        flush=True,
    )
    os.sched_setaffinity(0, plan.other_cores)
    setups = [FAST] if args.quick else [FAST, BENCHMARK]
    results = {s.model: run_setup(s, plan) for s in setups}
    summaries = {s.model: print_table(s.label, results[s.model]) for s in setups}
    split = summaries[setups[-1].model]
    print_verdicts(split, summaries[FAST.model], GPU_DECODE_RATE, plan.jobs)
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    plan.work.mkdir(parents=True, exist_ok=True)
    raw = {
        model: [[vars(p) for p in r.phases] + [vars(r) | {"phases": None}] for r in rounds]
        for model, rounds in results.items()
    }
    (plan.work / "results.json").write_text(
        json.dumps({"machine": machine(), "summary": summaries, "rounds": raw}, indent=2)
    )
    print(f"results: {plan.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
