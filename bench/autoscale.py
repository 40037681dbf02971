"""Replay arrival traces through GPU fleet policies: what scaling from zero costs and saves.

`python -m bench.autoscale` (seconds; `--quick` for a smaller run) simulates, for each trace,
the Headrace rule (headrace/core/scaling.py, the rule template.yaml encodes), the same rule
dividing the backlog by running tasks, a SageMaker-style policy without the 0->1 alarm, and N
workers always on (N: enough for the trace's peak). It prints GPU-hours, their cost, queue wait
percentiles (arrival to start) and the worst first-token wait of a job that arrives after an
idle period; then a sweep of the target backlog per worker and the scale-in cooldown, from which
template.yaml's defaults are chosen (README "Deploying to AWS"). With matplotlib, a plot of the
workers over time goes to `--out`.

Per-worker throughput and first-token time are the benchmark's (README "Performance": headrace,
2.42 jobs/s with 16 jobs in service on 2 CPU cores; 0.27 s to the first token of a job an idle
worker starts). The cold-start chain is parameters: nothing here measured an AWS instance.
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.autoscale_model import (
    DAY_S,
    AlwaysOn,
    ColdStart,
    Fleet,
    Result,
    SimConfig,
    WorkerModel,
    poisson_counts,
    simulate,
)
from headrace.core.scaling import ScalingPolicy

HOUR_S = 3600.0
DEFAULT_OUT = Path("bench/out/autoscale")


@dataclass(frozen=True)
class Trace:
    name: str
    seconds: float
    rate: Callable[[np.ndarray], np.ndarray]  # jobs/s at each time (s)


def _window(t: np.ndarray, start: float, seconds: float, jobs: float) -> np.ndarray:
    """`jobs` spread evenly over [start, start + seconds)."""
    inside = (t >= start) & (t < start + seconds)
    return np.where(inside, jobs / seconds, 0.0)


def _diurnal(peak: float) -> Callable[[np.ndarray], np.ndarray]:
    """Nothing from 22:00 to 06:00; a sin² day between, `peak` jobs/s at 14:00."""

    def rate(t: np.ndarray) -> np.ndarray:
        hour = (t % DAY_S) / HOUR_S
        day = np.sin(np.pi * (hour - 6.0) / 16.0) ** 2
        return np.where((hour >= 6.0) & (hour < 22.0), peak * day, 0.0)

    return rate


def traces(mu: float, quick: bool) -> list[Trace]:
    """The four traces, in units of one worker's throughput `mu` (jobs/s)."""
    if quick:
        return [
            Trace("burst", 1.5 * HOUR_S, lambda t: _window(t, 600, 10, 200)),
            Trace(
                "spike after idle night",
                3 * HOUR_S,
                lambda t: (
                    _window(t, HOUR_S, 60, 100) + _window(t, HOUR_S, HOUR_S, 0.3 * mu * HOUR_S)
                ),
            ),
        ]
    return [
        Trace("burst", 3 * HOUR_S, lambda t: _window(t, 600, 10, 2000)),
        Trace("diurnal day", DAY_S, _diurnal(0.8 * mu)),
        Trace("day x100", DAY_S, _diurnal(80 * mu)),
        Trace(
            "spike after idle night",
            11 * HOUR_S,
            lambda t: (
                _window(t, 8 * HOUR_S, 60, 500)
                + _window(t, 8 * HOUR_S, 2 * HOUR_S, 0.3 * mu * 2 * HOUR_S)
            ),
        ),
    ]


def arrivals(trace: Trace, step_s: float, seed: int) -> list[int]:
    t = np.arange(0.0, trace.seconds, step_s)
    return poisson_counts(trace.rate(t), step_s, seed)


def duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "never"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < HOUR_S:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / HOUR_S:.1f} h"


def row(trace: str, policy: str, result: Result) -> str:
    cells = [
        trace,
        policy,
        f"{result.gpu_hours:.1f}",
        f"${result.cost:,.2f}",
        *(duration(result.wait_percentile(q)) for q in (0.5, 0.95, 0.99)),
        duration(result.worst_after_idle_s),
        f"{result.unserved:,}",
        str(result.peak_workers),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| trace | policy | GPU-hours | cost | wait p50 | wait p95 | wait p99 "
    "| first token after idle (worst) | never served | peak workers |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def policies(base: ScalingPolicy, peak_workers: int) -> list[tuple[str, Fleet]]:
    return [
        (
            f"headrace (target {base.target_backlog_per_worker:g}, "
            f"cooldown {base.scale_in_cooldown_seconds:g} s)",
            base,
        ),
        ("headrace, backlog per running task", replace(base, divide_by="running")),
        ("SageMaker-style, no 0->1 alarm", replace(base, wake_from_zero=False)),
        (f"always-on {peak_workers}", AlwaysOn(peak_workers)),
    ]


def peak_need(counts: list[int], step_s: float, mu: float) -> int:
    """Workers that keep up with the busiest ten minutes of a trace."""
    window = max(1, round(600 / step_s))
    sums = np.convolve(np.asarray(counts, dtype=float), np.ones(window), mode="valid")
    busiest = float(sums.max()) / (window * step_s) if len(sums) else 0.0
    return max(1, math.ceil(busiest / mu))


def sweep(
    args: argparse.Namespace, config: SimConfig, base: ScalingPolicy, runs: list[Trace]
) -> list[str]:
    lines = [
        "| trace | target backlog per worker | scale-in cooldown | GPU-hours | cost "
        "| wait p95 | wait p99 | first token after idle (worst) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    slots = config.worker.slots
    for trace in runs:
        counts = arrivals(trace, config.step_s, args.seed)
        for factor in (0.5, 1.0, 2.0, 4.0):
            for cooldown in (60.0, 300.0, 900.0):
                policy = replace(
                    base,
                    target_backlog_per_worker=factor * slots,
                    scale_in_cooldown_seconds=cooldown,
                )
                result = simulate(counts, policy, config)
                lines.append(
                    f"| {trace.name} | {factor:g} x {slots} = {factor * slots:g} | {cooldown:g} s "
                    f"| {result.gpu_hours:.1f} | ${result.cost:,.2f} "
                    f"| {duration(result.wait_percentile(0.95))} "
                    f"| {duration(result.wait_percentile(0.99))} "
                    f"| {duration(result.worst_after_idle_s)} |"
                )
    return lines


def plot(out: Path, series: dict[str, list[tuple[str, Result]]]) -> str:
    """Workers over time per trace; matplotlib is optional (the `bench` extra)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    fig, axes = plt.subplots(len(series), 1, figsize=(10, 3 * len(series)), squeeze=False)
    for ax, (trace, results) in zip(axes[:, 0], series.items(), strict=True):
        for name, result in results:
            hours = [t / HOUR_S for t, _, _ in result.timeline]
            ax.step(hours, [ready for _, _, ready in result.timeline], where="post", label=name)
        ax.set_title(trace)
        ax.set_xlabel("hours")
        ax.set_ylabel("workers taking jobs")
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "autoscale.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {path}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add = parser.add_argument
    add("--quick", action="store_true", help="two short traces, no sweep")
    add("--no-sweep", action="store_true", help="skip the target/cooldown sweep")
    add("--seed", type=int, default=14)
    add("--step-s", type=float, default=2.0, help="simulation time step")
    add("--price-per-hour", type=float, default=0.805, help="one GPU instance, $/h")
    add("--jobs-per-second", type=float, default=2.42, help="one worker at full load")
    add("--slots", type=int, default=16, help="jobs one worker has in service at once")
    add("--first-token-s", type=float, default=0.27, help="job start to first token")
    add("--instance-boot-s", type=float, default=180.0)
    add("--image-pull-s", type=float, default=90.0)
    add("--model-load-s", type=float, default=45.0)
    add("--warm-task-start-s", type=float, default=10.0)
    add("--instance-linger-s", type=float, default=900.0)
    add("--metric-lag-s", type=float, default=60.0)
    add("--target", type=float, default=0.0, help="backlog per worker; 0: slots")
    add("--scale-in-cooldown-s", type=float, default=300.0)
    add("--max-workers", type=int, default=128)
    add("--out", type=Path, default=DEFAULT_OUT, help="where the plot goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    cold = ColdStart(
        instance_boot_s=args.instance_boot_s,
        image_pull_s=args.image_pull_s,
        model_load_s=args.model_load_s,
        warm_task_start_s=args.warm_task_start_s,
        instance_linger_s=args.instance_linger_s,
    )
    worker = WorkerModel(
        jobs_per_second=args.jobs_per_second, slots=args.slots, first_token_s=args.first_token_s
    )
    config = SimConfig(
        cold=cold,
        worker=worker,
        price_per_hour=args.price_per_hour,
        step_s=args.step_s,
        metric_lag_s=args.metric_lag_s,
        drain_s=HOUR_S if args.quick else 2 * HOUR_S,
    )
    base = ScalingPolicy(
        target_backlog_per_worker=args.target or args.slots,
        max_workers=args.max_workers,
        scale_in_cooldown_seconds=args.scale_in_cooldown_s,
    )
    print(
        f"worker: {worker.jobs_per_second:g} jobs/s, {worker.slots} in service, "
        f"{worker.service_s:.1f} s a job; cold start {duration(cold.cold_s)} (boot "
        f"{cold.instance_boot_s:g} s + pull {cold.image_pull_s:g} s + model "
        f"{cold.model_load_s:g} s), on a warm instance {duration(cold.warm_s)}; "
        f"${config.price_per_hour:g} per GPU-hour; seed {args.seed}\n"
    )
    print(HEADER)
    runs = traces(worker.jobs_per_second, args.quick)
    series: dict[str, list[tuple[str, Result]]] = {}
    for trace in runs:
        counts = arrivals(trace, config.step_s, args.seed)
        need = peak_need(counts, config.step_s, worker.jobs_per_second)
        for name, fleet in policies(base, need):
            result = simulate(counts, fleet, config)
            print(row(f"{trace.name} ({sum(counts):,} jobs)", name, result))
            if not name.startswith(("SageMaker", "headrace,")):
                series.setdefault(trace.name, []).append((name, result))
    if not (args.quick or args.no_sweep):
        swept = [t for t in runs if t.name in ("day x100", "spike after idle night")]
        print("\nSweep (the Headrace rule):\n")
        print("\n".join(sweep(args, config, base, swept)))
    print(f"\n{plot(args.out, series)}")
    print(f"simulated in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
