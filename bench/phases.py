"""One measurement each: the engine limit and transformers in child processes, Headrace and
the naive worker through one local stack (moto, gateway) with a fresh worker per phase."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.engine_limit import Strategy
from bench.jobs import Job, ModelShape
from bench.procinfo import children, cpu_seconds, peak_rss_mb
from bench.report import Summary
from bench.through_stack import LogTail, PhaseResult, run_jobs
from headrace.dev.moto import stop_process
from headrace.dev.stack import LocalStack, StackOptions
from worker.decoding import TextCodec

ROOT = Path(__file__).resolve().parent.parent

# A stopped worker's long poll lives on in the AWS endpoint until its wait ends, and takes the
# next phase's messages (they come back only after the visibility timeout). A short wait, and
# a pause between a worker's stop and the next worker's first job, keep the phases apart.
RECEIVE_WAIT_S = 2
STALE_POLL_S = RECEIVE_WAIT_S + 0.5

# When each stack's last worker stopped: the next worker's first job waits out the stale poll
# (its start-up counts towards it); after the last phase nothing waits.
_last_stop: weakref.WeakKeyDictionary[LocalStack, float] = weakref.WeakKeyDictionary()

# What each worker phase sets on top of the stack's settings.
WORKER_MODES: dict[str, dict[str, str]] = {
    "headrace": {},  # the worker's own defaults: what this benchmark measures
    "naive": {
        "HEADRACE_MAX_BATCH_SIZE": "1",
        "HEADRACE_INTER_THREADS": "1",
        "HEADRACE_INTRA_THREADS": "2",
    },
}


def _child(module: str, request: dict[str, Any], work: Path, tag: str, python: str) -> Any:
    request_file, result_file = work / f"{tag}.json", work / f"{tag}-result.json"
    request_file.write_text(json.dumps(request))
    subprocess.run(
        [python, "-m", module, str(request_file), str(result_file)], cwd=ROOT, check=True
    )
    return json.loads(result_file.read_text())


def engine_phase(
    work: Path,
    model_dir: Path,
    jobs: list[Job],
    strategies: list[Strategy],
    probe_prompts: list[str],
    tag: str,
    device: str = "cpu",
) -> dict[str, Any]:
    request = {
        "model_dir": str(model_dir),
        "device": device,
        "compute_type": "int8",
        "jobs": [asdict(j) for j in jobs],
        "strategies": [asdict(s) for s in strategies],
        "probe_prompts": probe_prompts,
    }
    result: dict[str, Any] = _child("bench.engine_limit", request, work, tag, sys.executable)
    return result


def timed_summary(
    system: str, detail: str, timings: list[dict[str, Any]], wall: float, peak: float | None
) -> Summary:
    return Summary(
        system=system,
        detail=detail,
        tokens=sum(int(t["tokens"]) for t in timings),
        makespan_s=wall,
        jobs=len(timings),
        ttft_s=[t["first_token_s"] for t in timings if t["first_token_s"] is not None],
        latency_s=[t["done_s"] for t in timings if t["done_s"] is not None],
        peak_mb=peak,
    )


def engine_summaries(result: dict[str, Any]) -> list[Summary]:
    return [
        timed_summary("engine limit", s["name"], s["jobs"], s["wall_s"], s["peak_rss_mb"])
        for s in result["strategies"]
    ]


def hf_phase(
    work: Path,
    python: str,
    model_dir: Path,
    shape: ModelShape,
    jobs: list[Job],
    codec: TextCodec,
    tag: str,
) -> tuple[Summary, dict[str, Any]]:
    def ids(job: Job) -> list[int]:
        # The ids of the very tokens the worker and the engine decode from.
        return [codec.tokenizer.token_to_id(t) or 0 for t in codec.prompt_tokens(job.prompt)]

    request = {
        "model_dir": str(model_dir),
        "threads": 2,
        "batch_size": 8,
        "shape": asdict(shape),
        "jobs": [
            {"index": j.index, "prompt_ids": ids(j), "max_new_tokens": j.max_new_tokens}
            for j in jobs
        ],
    }
    result: dict[str, Any] = _child("bench.hf_baseline", request, work, tag, python)
    detail = "generate, batches of 8 by prompt length, float32, 2 threads"
    summary = timed_summary(
        "transformers", detail, result["jobs"], result["wall_s"], result["peak_rss_mb"]
    )
    return summary, result


# ---- worker phases ---------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: LogTail


@contextmanager
def worker(
    stack: LocalStack, env: Mapping[str, str], model: str, timeout: float = 180.0
) -> Iterator[Worker]:
    """A fresh worker, ready (model loaded and warm, receiving) until the block ends.

    One small job goes through first, so neither the worker nor the gateway's AWS clients
    meet the measured jobs cold."""
    process = stack.start_worker(env)
    log = LogTail(stack.worker_log(len(stack.workers) - 1), offset=0)
    try:
        deadline = time.monotonic() + timeout
        while not any(r.get("message") == "worker ready" for r in log.read()):
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}: {log.path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker was not ready in {timeout:g}s: {log.path}")
            time.sleep(0.1)
        if stack in _last_stop:
            time.sleep(max(0.0, _last_stop[stack] + STALE_POLL_S - time.monotonic()))
        warm_up = Job(-1, "warm up", 3, 4)
        asyncio.run(run_jobs(stack.base_url, stack.api_key, model, [warm_up], log))
        yield Worker(process, log)
    finally:
        stop_process(process, timeout=30)
        _last_stop[stack] = time.monotonic()


def cpu_snapshot(worker_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the worker, the gateway, the AWS endpoint, the event sources
    (the stack's stand-in for event source mappings) and this client."""
    snapshot = {"worker": cpu_seconds(worker_pid), "gateway": 0.0, "moto": 0.0, "events": 0.0}
    for pid, command in children().items():
        if "headrace.dev.moto_server" in command:
            snapshot["moto"] += cpu_seconds(pid)
        elif "headrace.dev.event_sources" in command:
            snapshot["events"] += cpu_seconds(pid)
        elif " gateway" in command:
            snapshot["gateway"] += cpu_seconds(pid)
    snapshot["client"] = cpu_seconds()
    return snapshot


@dataclass
class WorkerPhase:
    summary: Summary
    result: PhaseResult
    cpu_s: dict[str, float]
    short_jobs: list[tuple[int, int, int]]  # (job, completion tokens, max_new_tokens)


def worker_phase(
    stack: LocalStack, running: Worker, system: str, detail: str, model: str, jobs: list[Job]
) -> WorkerPhase:
    before = cpu_snapshot(running.process.pid)
    result = asyncio.run(run_jobs(stack.base_url, stack.api_key, model, jobs, running.log))
    after = cpu_snapshot(running.process.pid)
    failed = [j for j in result.jobs if j.status != "SUCCEEDED"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}")
    summary = Summary(
        system=system,
        detail=detail,
        tokens=sum(j.completion_tokens for j in result.jobs),
        makespan_s=result.makespan_s,
        jobs=len(result.jobs),
        ttft_s=[j.ttft_s for j in result.jobs if j.ttft_s is not None],
        latency_s=[j.latency_s for j in result.jobs if j.latency_s is not None],
        peak_mb=peak_rss_mb(running.process.pid),
    )
    wanted = {j.index: j.max_new_tokens for j in jobs}
    short = [
        (j.index, j.completion_tokens, wanted[j.index])
        for j in result.jobs
        if j.completion_tokens < wanted[j.index]
    ]
    cpu = {k: after[k] - before[k] for k in before}
    return WorkerPhase(summary, result, cpu, short)


def model_stack(
    out: Path, work: Path, model: str, model_dir: Path, device: str = "cpu"
) -> LocalStack:
    """A local stack (not started) whose zoo is the benchmark model, decoded on `device` in
    int8, its logs under `work`."""
    return LocalStack(
        StackOptions(
            home=(out / "home").resolve(),
            gateway_port=0,
            logs_dir=work / "logs",
            settings_env={
                "HEADRACE_MODEL_ZOO": json.dumps({model: str(model_dir)}),
                "HEADRACE_WORKER_MODELS": model,
                "HEADRACE_DEVICE": device,
                "HEADRACE_COMPUTE_TYPE": "int8",
                "HEADRACE_RECEIVE_WAIT_SECONDS": str(RECEIVE_WAIT_S),
            },
        )
    )
