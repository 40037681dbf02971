"""The engine's own limit: the job set decoded by `worker.engine.Engine` directly (no queue, no
store) with the best of a few batching strategies.

It runs in a process of its own (``python -m bench.engine_limit REQUEST.json RESULT.json``) so
the peak memory it reports is the engine's alone. Every job is "submitted" when a strategy
starts: time to first token and latency count from there.

CTranslate2 forwards only the shortest prompt of a batch in one pass and feeds the other
prompts' remaining tokens one step at a time, so a batch mixing an 8-token and a 256-token
prompt costs ~250 extra decode steps. Grouping by prompt length is what the strategies vary;
one of them is the worker's own batch policy (worker/batching.py) given every job at once, so
the ceiling is never below what the worker's scheduling could reach without a queue.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.jobs import Job, load_codec
from bench.procinfo import peak_rss_mb, reset_peak_rss
from worker.batching import select_batch
from worker.decoding import TextCodec
from worker.engine import Engine, EngineConfig, SamplingParams, Step

GREEDY = SamplingParams(top_k=1)
FIRST_TOKENS_KEPT = 8  # compared with the transformers baseline's output


@dataclass(frozen=True)
class Strategy:
    inter_threads: int  # engine replicas, each decoding its own batch
    intra_threads: int  # threads per replica
    batch_size: int  # 0: every job in one batch
    # "prompt": sorted by prompt length and cut; "arrival": the job set's order, cut;
    # "policy": worker.batching.select_batch, batch after batch, as if all jobs were held
    order: str

    @property
    def name(self) -> str:
        size = "all jobs in 1 batch" if self.batch_size == 0 else f"batches of {self.batch_size}"
        order = {
            "prompt": "by prompt length",
            "arrival": "in arrival order",
            "policy": "by the worker's batch policy",
        }[self.order]
        return f"{size} {order}, {self.inter_threads}x{self.intra_threads} threads"


# inter_threads x intra_threads = the 2 cores of the reference machine; more would oversubscribe.
# The worker's policy at its CPU default (8) and at 16; sorted batches of 16 come to the same
# batches as the policy's, so they run once.
STRATEGIES = [
    Strategy(2, 1, 8, "policy"),
    Strategy(2, 1, 16, "policy"),
    Strategy(2, 1, 16, "prompt"),
    Strategy(2, 1, 8, "prompt"),
]
# On a GPU the worker times batches of 32, 64 and 128 (worker/tuning.py CUDA_WIDTHS) and a
# wider step costs little more, so the engine's limit there is sought among wider batches too:
# a baseline held to the CPU's widths would flatter the worker.
CUDA_STRATEGIES = [
    Strategy(2, 1, 32, "policy"),
    Strategy(2, 1, 64, "policy"),
    Strategy(2, 1, 32, "prompt"),
    Strategy(2, 1, 0, "prompt"),
]
# --explore: what else was tried (on 2 cores: 1 batch 72 s, batches of 32 44 s, against 35 s
# for batches of 16, so they no longer run by default).
MORE_STRATEGIES = [
    Strategy(1, 2, 0, "prompt"),
    Strategy(2, 1, 32, "prompt"),
    Strategy(1, 2, 8, "prompt"),
    Strategy(2, 1, 4, "prompt"),
    Strategy(2, 1, 8, "arrival"),
]


def strategies_for(device: str, explore: bool) -> list[Strategy]:
    """The strategies the first run tries on `device` (later runs measure the best again)."""
    tried = STRATEGIES + (CUDA_STRATEGIES if device == "cuda" else [])
    return tried + (MORE_STRATEGIES if explore else [])


@dataclass
class JobTiming:
    index: int
    tokens: int = 0
    first_token_s: float | None = None
    done_s: float | None = None
    first_ids: list[int] = field(default_factory=list)


def batches(jobs: list[Job], strategy: Strategy) -> list[list[Job]]:
    if strategy.order == "policy":
        return policy_batches(jobs, strategy.batch_size)
    ordered = sorted(jobs, key=lambda j: j.prompt_tokens) if strategy.order == "prompt" else jobs
    size = strategy.batch_size or len(ordered)
    groups = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    # Most work first, so the replicas finish together: ordered by decode steps instead, the
    # same four batches of 16 took 33-36 s against 30-32 s (the long prompts went last).
    return sorted(groups, key=batch_work, reverse=True)


def batch_work(batch: list[Job]) -> int:
    return sum(j.prompt_tokens + j.max_new_tokens for j in batch)


@dataclass
class _Held:
    """A job as worker.batching sees one."""

    job: Job
    held_since: float = 0.0
    params: SamplingParams = GREEDY

    @property
    def prompt(self) -> list[str]:
        return [""] * self.job.prompt_tokens

    @property
    def remaining_tokens(self) -> int:
        return self.job.max_new_tokens


def policy_batches(jobs: list[Job], batch_size: int) -> list[list[Job]]:
    held = [_Held(j) for j in jobs]
    groups = []
    while held:
        batch = select_batch(held, batch_size, now=0.0)
        groups.append([h.job for h in batch])
        held = [h for h in held if h not in batch]
    return groups


def decode_batch(
    engine: Engine, codec: TextCodec, batch: list[Job], timings: dict[int, JobTiming], t0: float
) -> None:
    records = [timings[j.index] for j in batch]

    def on_step(step: Step) -> bool:  # on the replica's thread, one batch per thread
        job, record = batch[step.index], records[step.index]
        now = time.perf_counter() - t0
        if record.first_token_s is None:
            record.first_token_s = now
        record.tokens += 1
        if len(record.first_ids) < FIRST_TOKENS_KEPT:
            record.first_ids.append(step.token_id)
        if record.tokens >= job.max_new_tokens:
            record.done_s = now
            return True
        return False

    longest = max(j.max_new_tokens for j in batch)
    engine.generate(
        [codec.prompt_tokens(j.prompt) for j in batch],
        params=GREEDY,
        max_new_tokens=longest,
        # Random weights may pick the end token: every job runs its full length.
        min_new_tokens=longest,
        return_log_probs=False,
        on_step=on_step,
    )
    end = time.perf_counter() - t0
    for record in records:
        if record.done_s is None:
            record.done_s = end


def run_strategy(
    engine: Engine, codec: TextCodec, jobs: list[Job], strategy: Strategy
) -> dict[str, Any]:
    timings = {j.index: JobTiming(j.index) for j in jobs}
    groups = batches(jobs, strategy)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(strategy.inter_threads) as pool:
        futures = [pool.submit(decode_batch, engine, codec, g, timings, t0) for g in groups]
        for future in futures:
            future.result()
    wall = time.perf_counter() - t0
    return {
        "name": strategy.name,
        "strategy": asdict(strategy),
        "wall_s": wall,
        "batch_sizes": [len(g) for g in groups],
        "jobs": [asdict(t) for t in timings.values()],
    }


def prefill_seconds(engine: Engine, codec: TextCodec, prompt: str, tries: int = 3) -> float:
    """Time to the first token of one prompt alone on an idle replica (best of `tries`)."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        first: list[float] = []

        def on_step(step: Step, first: list[float] = first, start: float = start) -> bool:
            first.append(time.perf_counter() - start)
            return True

        engine.generate(
            [codec.prompt_tokens(prompt)],
            params=GREEDY,
            max_new_tokens=1,
            return_log_probs=False,
            on_step=on_step,
        )
        best = min(best, first[0] if first else time.perf_counter() - start)
    return best


def warm_up(engine: Engine, codec: TextCodec) -> None:
    engine.generate(
        [codec.prompt_tokens("warm up")],
        params=GREEDY,
        max_new_tokens=2,
        return_log_probs=False,
        on_step=lambda step: False,
    )


def plan_key(jobs: list[Job], strategy: Strategy) -> tuple[Any, ...]:
    """What a strategy runs: its threads and its batches in order; the order of jobs within a
    batch does not count (the engine forwards a batch as one padded tensor either way)."""
    groups = batches(jobs, strategy)
    sets = (frozenset(j.index for j in g) for g in groups)
    return (strategy.inter_threads, strategy.intra_threads, *sets)


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    model_dir = Path(request["model_dir"])
    compute_type = request["compute_type"]
    device = request.get("device", "cpu")
    jobs = [Job(**raw) for raw in request["jobs"]]
    strategies = [Strategy(**raw) for raw in request["strategies"]]
    codec = load_codec(model_dir)
    results: dict[Strategy, dict[str, Any]] = {}
    # Strategies that come to the same batches run once: the best of two runs of one plan
    # would only pick the luckier noise.
    measured: dict[tuple[Any, ...], Strategy] = {}
    # One engine at a time, so each strategy's peak memory is its own engine's.
    configs = sorted({(s.inter_threads, s.intra_threads) for s in strategies})
    for inter, intra in configs:
        engine = Engine(model_dir, EngineConfig(device, compute_type, inter, intra))
        try:
            warm_up(engine, codec)
            for strategy in strategies:
                if (strategy.inter_threads, strategy.intra_threads) != (inter, intra):
                    continue
                plan = plan_key(jobs, strategy)
                if plan in measured:
                    same = results[measured[plan]]
                    name = f"{strategy.name} (the same batches as {same['name']})"
                    results[strategy] = {**same, "name": name, "strategy": asdict(strategy)}
                    print(f"  engine: {name}", flush=True)
                    continue
                reset_peak_rss()  # from what the loaded engine holds
                result = run_strategy(engine, codec, jobs, strategy)
                result["peak_rss_mb"] = peak_rss_mb()
                results[strategy] = result
                measured[plan] = strategy
                print(f"  engine: {result['name']}: {result['wall_s']:.1f}s", flush=True)
        finally:
            engine.close()
    # Prefill as the worker's replicas see it: its default threads for this machine.
    default = Engine(model_dir, EngineConfig(device, compute_type))
    try:
        warm_up(default, codec)
        prefill = {p: prefill_seconds(default, codec, p) for p in request.get("probe_prompts", [])}
    finally:
        default.close()
    Path(argv[1]).write_text(
        json.dumps({"strategies": [results[s] for s in strategies], "prefill_s": prefill})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
