"""python -m bench [--quick] [--runs N] [--hf]: the benchmark, one command.

Each run measures, on the same model and job set: the engine limit, Headrace through the
local stack, the naive worker (and transformers with --hf, first run only). The table holds
the medians of the runs; each ratio is taken within a run, then the median is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import phases, probes, report
from bench.engine_limit import Strategy, strategies_for
from bench.jobs import (
    GPT2_SMALL,
    TINY,
    Job,
    JobSetSpec,
    ModelShape,
    make_jobs,
    model_and_codec,
    save_jobs,
)
from bench.procinfo import machine
from bench.profile import Sampler, summarize
from bench.report import Summary
from headrace.dev.stack import LocalStack, StackOptions
from worker.decoding import TextCodec


@dataclass(frozen=True)
class Profile:
    shape: ModelShape
    model_name: str
    jobs: JobSetSpec
    runs: int
    long_new_tokens: int  # the long job of probe (b)


FULL = Profile(GPT2_SMALL, "bench-gpt2", JobSetSpec(), 3, 600)
QUICK = Profile(TINY, "bench-tiny", JobSetSpec(8, (8, 64), (8, 32)), 1, 200)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny model, 8 jobs, 1 run")
    parser.add_argument("--runs", type=int, help="runs to take the median of (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="output folder")
    parser.add_argument("--home", type=Path, help="HEADRACE_HOME of the stack (default OUT/home)")
    parser.add_argument("--hf", action="store_true", help="also run transformers (first run)")
    parser.add_argument("--hf-python", default=sys.executable, help="python with torch")
    parser.add_argument("--no-probes", action="store_true", help="skip the scheduling probes")
    parser.add_argument(
        "--probe-tries", type=int, default=3, help="tries of each idle-worker probe (default 3)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bench/gpu.sh)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample Headrace's worker with py-spy in its phases (perturbs them); print a summary",
    )
    parser.add_argument(
        "--explore", action="store_true", help="try more engine strategies in the first run"
    )
    args = parser.parse_args(argv)
    if args.probe_tries < 1:
        parser.error("--probe-tries must be at least 1")
    return args


def best(summaries: list[Summary]) -> Summary:
    return max(summaries, key=lambda s: s.tokens_per_s)


@dataclass
class Setup:
    """What every run uses: the options, the model, the job set and the probes' jobs."""

    args: argparse.Namespace
    profile: Profile
    runs: int
    work: Path
    model_dir: Path
    codec: TextCodec
    jobs: list[Job]
    idle_jobs: list[Job]
    long_job: Job
    short_job: Job
    started: float


@dataclass
class Collected:
    """What the runs gather for the report."""

    per_run: list[dict[str, Summary]] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(
        default_factory=lambda: {"headrace/engine": [], "headrace/naive": []}
    )
    facts: list[dict[str, Any]] = field(default_factory=list)
    probe_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engine_runs: list[list[dict[str, Any]]] = field(default_factory=list)
    profiles: list[Path] = field(default_factory=list)  # py-spy's stacks of the worker, --profile


def prepare(args: argparse.Namespace) -> Setup:
    profile = QUICK if args.quick else FULL
    out: Path = args.out.resolve()
    work = out / "runs" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model_dir, codec = model_and_codec(out, profile.model_name, profile.shape)
    jobs = make_jobs(codec, profile.jobs)
    save_jobs(jobs, work / "jobs.json")
    prompt_lengths = sorted(j.prompt_tokens for j in jobs)
    new_tokens = sorted(j.max_new_tokens for j in jobs)
    print(f"model: {profile.model_name} ({profile.shape.label})")
    print(
        f"jobs: {len(jobs)}, prompts {prompt_lengths[0]}-{prompt_lengths[-1]} tokens, "
        f"max_new_tokens {new_tokens[0]}-{new_tokens[-1]} ({sum(new_tokens)} tokens), greedy"
    )
    print(f"machine: {machine()}", flush=True)

    # Probe jobs: the job set's shortest and longest prompts.
    ordered = sorted(jobs, key=lambda j: j.prompt_tokens)
    idle_jobs = [
        Job(1000 + i, j.prompt, j.prompt_tokens, 16)
        for i, j in enumerate(ordered[::-1][:1] + ordered[:1])
    ]
    return Setup(
        args=args,
        profile=profile,
        runs=args.runs or profile.runs,
        work=work,
        model_dir=model_dir,
        codec=codec,
        jobs=jobs,
        idle_jobs=idle_jobs,
        long_job=Job(2000, ordered[0].prompt, ordered[0].prompt_tokens, profile.long_new_tokens),
        short_job=Job(2001, ordered[1].prompt, ordered[1].prompt_tokens, 16),
        started=started,
    )


def make_stack(setup: Setup) -> LocalStack:
    out: Path = setup.args.out.resolve()
    return LocalStack(
        StackOptions(
            home=(setup.args.home or out / "home").resolve(),
            gateway_port=0,
            logs_dir=setup.work / "logs",
            settings_env={
                "HEADRACE_MODEL_ZOO": json.dumps({setup.profile.model_name: str(setup.model_dir)}),
                "HEADRACE_WORKER_MODELS": setup.profile.model_name,
                "HEADRACE_DEVICE": setup.args.device,
                "HEADRACE_COMPUTE_TYPE": "int8",
                "HEADRACE_LOG_LEVEL": "INFO",
                "HEADRACE_RECEIVE_WAIT_SECONDS": str(phases.RECEIVE_WAIT_S),
            },
        )
    )


def engine_run(
    setup: Setup, strategies: list[Strategy], run: int, collected: Collected
) -> tuple[Summary, dict[str, Any], list[Strategy]]:
    """(the engine limit, the engine phase's raw result, the strategies later runs measure)."""
    probe_prompts = [j.prompt for j in setup.idle_jobs]
    work, model_dir, jobs = setup.work, setup.model_dir, setup.jobs
    device = setup.args.device
    engine = phases.engine_phase(
        work, model_dir, jobs, strategies, probe_prompts, f"engine-{run}", device
    )
    tried = phases.engine_summaries(engine)
    collected.engine_runs.append([{**s.metrics(), "strategy": s.detail} for s in tried])
    if len(strategies) > 1:
        # The first run chooses the strategy the others measure. The fastest of several
        # noisy measurements is a lucky one, so the first run's ceiling is measured
        # anew with the strategy chosen, not taken from the measurement that chose it.
        ranked = sorted(zip(tried, strategies, strict=True), key=lambda p: -p[0].tokens_per_s)
        strategies = [ranked[0][1]]
        print(f"  engine: chosen: {ranked[0][0].detail}; measured again", flush=True)
        engine = phases.engine_phase(
            work, model_dir, jobs, strategies, probe_prompts, f"engine-{run}-chosen", device
        )
        tried = phases.engine_summaries(engine)
        collected.engine_runs.append([{**s.metrics(), "strategy": s.detail} for s in tried])
    return best(tried), engine, strategies


def worker_runs(
    setup: Setup,
    stack: LocalStack,
    run: int,
    prefill: list[float],
    rows: dict[str, Summary],
    collected: Collected,
) -> None:
    """Headrace with the worker's defaults, then the naive worker (and the probes, first run)."""
    model = setup.profile.model_name
    for mode, label in (("headrace", "headrace"), ("naive", "naive worker")):
        with phases.worker(stack, phases.WORKER_MODES[mode], model) as running:
            detail = "worker defaults" if mode == "headrace" else "1 job at a time"
            stacks = setup.work / f"headrace-worker-run{run + 1}.stacks"
            sampled = mode == "headrace" and setup.args.profile
            sampler = Sampler(running.process.pid, stacks) if sampled else None
            try:
                phase = phases.worker_phase(stack, running, label, detail, model, setup.jobs)
            finally:
                if sampler is not None:
                    sampler.stop()
                    collected.profiles.append(stacks)
            if phase.short_jobs:
                collected.notes.append(
                    f"{label}, run {run + 1}: jobs ended early {phase.short_jobs}"
                )
            if mode == "headrace" and run == 0 and not setup.args.no_probes:
                for job, seconds in zip(setup.idle_jobs, prefill, strict=True):
                    tries = setup.args.probe_tries
                    idle = probes.idle_probe(stack, running, model, job, seconds, tries)
                    collected.probe_lines.append(idle.line())
                short = probes.short_probe(stack, running, model, setup.long_job, setup.short_job)
                collected.probe_lines.append(short.line())
        rows[label] = phase.summary
        collected.facts.append(
            {"run": run + 1, "system": label, **probes.evidence(phase, setup.jobs)}
        )
        print(f"  {label}: {phase.summary.makespan_s:.1f}s", flush=True)


def hf_run(setup: Setup, engine: dict[str, Any], collected: Collected) -> Summary:
    profile = setup.profile
    hf, hf_raw = phases.hf_phase(
        setup.work,
        setup.args.hf_python,
        setup.model_dir,
        profile.shape,
        setup.jobs,
        setup.codec,
        "hf",
    )
    collected.notes.append(
        f"transformers: 1 run; weights {hf_raw['weights']}; "
        f"{hf_raw['versions']}; same first 8 tokens as the engine for "
        f"{_agreement(engine, hf_raw)} of the jobs"
    )
    return hf


def one_run(
    setup: Setup, stack: LocalStack, strategies: list[Strategy], run: int, collected: Collected
) -> list[Strategy]:
    """One run of every system; returns the engine strategies the next runs measure."""
    print(f"run {run + 1}/{setup.runs}", flush=True)
    rows: dict[str, Summary] = {}
    rows["engine limit"], engine, strategies = engine_run(setup, strategies, run, collected)
    prefill = [engine["prefill_s"][j.prompt] for j in setup.idle_jobs]
    worker_runs(setup, stack, run, prefill, rows, collected)
    if setup.args.hf and run == 0:
        rows["transformers"] = hf_run(setup, engine, collected)
    collected.per_run.append(rows)
    engine_tps = rows["engine limit"].tokens_per_s
    collected.ratios["headrace/engine"].append(rows["headrace"].tokens_per_s / engine_tps)
    collected.ratios["headrace/naive"].append(
        rows["headrace"].tokens_per_s / rows["naive worker"].tokens_per_s
    )
    return strategies


def report_all(setup: Setup, collected: Collected) -> None:
    """The table, ratios, probes, evidence and notes; the plot and results.json."""
    per_run, runs, jobs, work = collected.per_run, setup.runs, setup.jobs, setup.work
    systems = ["engine limit", "headrace", "naive worker", "transformers"]
    rows_out = [
        (name, report.median_metrics(r[name].metrics() for r in per_run if name in r))
        for name in systems
        if any(name in r for r in per_run)
    ]
    limit_tps = dict(rows_out)["engine limit"]["tokens_per_s"]
    best_strategy = statistics.mode(r["engine limit"].detail for r in per_run)
    print()
    print(f"Median of {runs} run(s); {len(jobs)} jobs; machine: {machine()}")
    print(report.table(rows_out, limit_tps))
    print(f"engine limit = best of the strategies tried: {best_strategy}")
    for line in report.ratio_lines(collected.ratios):
        print(line)
    for line in collected.probe_lines:
        print(line)
    for fact in collected.facts:
        if fact["run"] == 1:
            for line in probes.evidence_lines(fact["system"], fact):
                print(line)
    for note in collected.notes:
        print(f"note: {note}")
    for stacks in collected.profiles:
        print(f"py-spy, Headrace's worker in its phase ({stacks.name}):")
        print("\n".join(summarize(stacks)))
    plot_path = work / "bench.png"
    profile = setup.profile
    title = f"{profile.model_name}: {profile.shape.label}; {len(jobs)} jobs; median of {runs}"
    skipped = report.plot(plot_path, rows_out, title)
    print(skipped or f"plot: {plot_path}")
    results = {
        "profile": asdict(profile),
        "machine": machine(),
        "runs": runs,
        "table": dict(rows_out),
        "ratios": collected.ratios,
        "engine_strategies": collected.engine_runs,
        "probes": collected.probe_lines,
        "evidence": collected.facts,
        "notes": collected.notes,
        "seconds": time.monotonic() - setup.started,
    }
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {work / 'results.json'} ({time.monotonic() - setup.started:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup = prepare(args)
    stack = make_stack(setup)
    collected = Collected()
    strategies = strategies_for(args.device, args.explore)
    stack.start(workers=0)
    try:
        for run in range(setup.runs):
            strategies = one_run(setup, stack, strategies, run, collected)
    finally:
        stack.stop()
    report_all(setup, collected)
    return 0


def _agreement(engine: dict[str, Any], hf: dict[str, Any]) -> str:
    first = {j["index"]: j["first_ids"] for j in engine["strategies"][0]["jobs"]}
    same = sum(1 for j in hf["jobs"] if first.get(j["index"]) == j["first_ids"])
    return f"{same}/{len(hf['jobs'])}"


if __name__ == "__main__":
    sys.exit(main())
