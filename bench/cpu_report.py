"""bench.worker_cpu's measurements per phase and round, and its tables and verdicts."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

STREAM_RATE_TARGET = 0.90  # streamed tokens/s over unstreamed, with the CPU split
STREAM_CPU_TARGET = 1.3  # streamed worker CPU per token over unstreamed
CEILING_TARGET = 10_000  # tokens/s one worker can feed a GPU, unstreamed


@dataclass
class Phase:
    name: str
    tokens: int
    makespan_s: float
    worker_cpu_s: float
    loop_cpu_s: float  # the worker's main thread: its event loop (AWS calls, streams)
    others_cpu_s: float  # the AWS endpoint and the gateway

    @property
    def rate(self) -> float:
        return self.tokens / self.makespan_s

    @property
    def cpu_per_token(self) -> float:
        return self.worker_cpu_s / self.tokens


@dataclass
class Round:
    phases: list[Phase]  # unstreamed first
    engine_cpu: list[float]  # the engine alone's CPU per token for each phase's job set
    engine_rate: float

    def overhead(self, phase: Phase) -> float:
        """The worker's CPU per token beyond the engine's own."""
        return phase.cpu_per_token - self.engine_cpu[self.phases.index(phase)]


def _median(values: list[float]) -> float:
    return statistics.median(values)


def rows(rounds: list[Round]) -> dict[str, dict[str, Any]]:
    """Per phase: medians over the rounds, each ratio taken within its round (and kept)."""
    table: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(p.name for p in rounds[0].phases):
        per = [(r, r.phases[i], r.phases[0]) for r in rounds]
        rate_ratios = [p.rate / u.rate for _, p, u in per]
        cpu_ratios = [p.cpu_per_token / u.cpu_per_token for _, p, u in per]
        table[name] = {
            "tokens_per_s": _median([p.rate for _, p, _ in per]),
            "cpu_ms_per_token": _median([p.cpu_per_token * 1000 for _, p, _ in per]),
            "overhead_us_per_token": _median([r.overhead(p) * 1e6 for r, p, _ in per]),
            "ceiling_tokens_per_s": _median([1 / max(r.overhead(p), 1e-9) for r, p, _ in per]),
            "loop_us_per_token": _median([p.loop_cpu_s / p.tokens * 1e6 for _, p, _ in per]),
            "rate_vs_unstreamed": _median(rate_ratios),
            "cpu_vs_unstreamed": _median(cpu_ratios),
            "rate_ratios": rate_ratios,
            "cpu_ratios": cpu_ratios,
            "endpoint_gateway_cpu_s": _median([p.others_cpu_s for _, p, _ in per]),
            "tokens": _median([float(p.tokens) for _, p, _ in per]),
        }
    return table


def print_table(label: str, rounds: list[Round]) -> dict[str, Any]:
    table = rows(rounds)
    engine = {
        "tokens_per_s": _median([r.engine_rate for r in rounds]),
        "cpu_ms_per_token": _median([r.engine_cpu[0] * 1000 for r in rounds]),
    }
    print(
        f"\n{label}, medians of {len(rounds)} rounds:\n\n"
        "| phase | tokens/s | worker CPU per token | overhead per token | of it the event loop "
        "| ceiling (tokens/s) | tokens/s vs unstreamed | CPU vs unstreamed "
        "| endpoint, gateway, event sources CPU |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for name, row in table.items():
        # The engine's own spread between rounds can exceed the worker's overhead (a slow
        # decoder): then neither it nor the ceiling it gives is a figure.
        measured = row["overhead_us_per_token"] > 0
        overhead = f"{row['overhead_us_per_token']:.0f} us" if measured else "(noise)"
        ceiling = f"{row['ceiling_tokens_per_s']:,.0f}" if measured else "-"
        print(
            f"| {name} | {row['tokens_per_s']:.0f} | {row['cpu_ms_per_token']:.3f} ms "
            f"| {overhead} | {row['loop_us_per_token']:.0f} us "
            f"| {ceiling} "
            f"| {row['rate_vs_unstreamed']:.2f} | {row['cpu_vs_unstreamed']:.2f} "
            f"| {row['endpoint_gateway_cpu_s']:.1f} s |"
        )
    print(
        f"| engine alone | {engine['tokens_per_s']:.0f} | {engine['cpu_ms_per_token']:.3f} ms "
        "| - | - | - | - | - | - |"
    )
    return {"phases": table, "engine_alone": engine}


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_verdicts(
    split: dict[str, Any], fast: dict[str, Any] | None, gpu_rate: str, jobs: int
) -> None:
    """The streaming targets from the run on the CPU split, the ceiling from the fast model's
    run (its decoder leaves the CPU to the worker, as a GPU does) when there is one."""
    print()
    for name, row in split["phases"].items():
        if "subscriber" not in name:
            continue
        runs = ", ".join(f"{v:.2f}" for v in row["rate_ratios"])
        ok = row["rate_vs_unstreamed"] >= STREAM_RATE_TARGET
        print(
            f"{name}: tokens/s vs unstreamed = {row['rate_vs_unstreamed']:.2f} (runs {runs}; "
            f"target >= {STREAM_RATE_TARGET}: {_verdict(ok)})"
        )
        runs = ", ".join(f"{v:.2f}" for v in row["cpu_ratios"])
        ok = row["cpu_vs_unstreamed"] <= STREAM_CPU_TARGET
        print(
            f"{name}: worker CPU per token vs unstreamed = {row['cpu_vs_unstreamed']:.2f} "
            f"(runs {runs}; target <= {STREAM_CPU_TARGET}: {_verdict(ok)})"
        )
    table = (fast or split)["phases"]
    plain = table["unstreamed"]
    streamed = [row["ceiling_tokens_per_s"] for n, row in table.items() if "subscriber" in n]
    ceiling = plain["ceiling_tokens_per_s"]
    with_streams = (
        f" ({', '.join(f'{c:,.0f}' for c in streamed)} with 1 and 4 subscribers per job)"
        if streamed
        else ""
    )
    print(
        f"\nthis worker can feed at most {ceiling:,.0f} tokens/s of unstreamed work"
        f"{with_streams} (target >= {CEILING_TARGET:,}: {_verdict(ceiling >= CEILING_TARGET)}); "
        f"the GPU decode rate of the benchmark model: {gpu_rate}"
    )
    longer = [row for n, row in table.items() if "longer" in n]
    if longer:
        # overhead = per_token + per_job / tokens_per_job, from the two job lengths
        short_len, long_len = plain["tokens"] / jobs, longer[0]["tokens"] / jobs
        short_o, long_o = plain["overhead_us_per_token"], longer[0]["overhead_us_per_token"]
        per_job = (short_o - long_o) / (1 / short_len - 1 / long_len)
        per_token = short_o - per_job / short_len
        # A split from two noisy points can come out negative: no ceiling from that.
        bound = (
            f"at most {1e6 / per_token:,.0f} tokens/s of jobs long enough that the part per job "
            "vanishes"
            if per_token > 0 and per_job > 0
            else "the split is within the noise of this run"
        )
        print(
            f"of that overhead, about {per_token:.0f} us per token and {per_job / 1000:.1f} ms "
            f"per job (jobs of {short_len:.0f} and {long_len:.0f} tokens): {bound}"
        )
