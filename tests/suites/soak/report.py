"""The soak report: the memory table, the jobs, the verdict; report.json beside samples.csv."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.suites.soak.examples import PER_KIND, example_lines
from tests.suites.soak.follow import FollowTally
from tests.suites.soak.load import Tally
from tests.suites.soak.memory import Growth


@dataclass(frozen=True)
class Window:
    seconds: float  # of steady load, sampled
    warmup: float  # left out of the fit
    limit: float  # MiB/h a process must exceed to count as growing (memory.growth_limit)


@dataclass
class Outcome:
    tally: Tally
    follows: FollowTally
    stuck: list[str]  # request ids never seen final
    growths: list[Growth]
    window: Window
    reaped: int = 0  # items deleted in place of DynamoDB's TTL (reap.py)
    reap_errors: int = 0

    def problems(self) -> list[str]:
        """Why the run fails; empty if it passes."""
        t = self.tally
        found = [
            f"{n} {what}"
            for n, what in (
                (t.lost, "lost (404 after an accept)"),
                (sum(t.failed.values()), "failed"),
                (sum(t.refused.values()), "refused at submit"),
                (len(self.stuck), "stuck (not final at the end)"),
                (sum(self.follows.problems.values()), "followed streams not delivered whole"),
            )
            if n
        ]
        for g in self.growths:
            if g.exited_at is not None:
                found.append(f"{g.label} exited {g.exited_at:.0f}s into the run")
            elif g.mib_per_hour is not None and g.mib_per_hour > self.window.limit:
                found.append(f"{g.label} grows {g.mib_per_hour:+.1f} MiB/h")
        return found


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.most_common())


def memory_lines(growths: list[Growth], window: Window) -> list[str]:
    lines = [
        f"  memory: RSS over {window.seconds / 60:.1f} min, the first {window.warmup:.0f}s"
        f" (warm-up) left out; growth = least-squares slope; limit {window.limit:.0f} MiB/h",
        f"    {'process':<12} {'pid':>8} {'start MiB':>10} {'end MiB':>9} {'peak MiB':>9}"
        f" {'growth MiB/h':>13} {'samples':>8}",
    ]
    for g in growths:
        rate = "-" if g.mib_per_hour is None else f"{g.mib_per_hour:+.1f}"
        note = ""
        if g.exited_at is not None:
            note = f"  EXITED at {g.exited_at:.0f}s"
        elif g.mib_per_hour is not None and g.mib_per_hour > window.limit:
            note = "  GROWS"
        lines.append(
            f"    {g.label:<12} {g.pid:>8} {_mib(g.start_mib):>10} {_mib(g.end_mib):>9}"
            f" {_mib(g.peak_mib):>9} {rate:>13} {g.samples:>8}{note}"
        )
    return lines


def job_lines(outcome: Outcome) -> list[str]:
    t = outcome.tally
    f = outcome.follows
    p50, p95 = percentile(t.latencies, 50), percentile(t.latencies, 95)
    latency = "-" if p50 is None or p95 is None else f"p50 {p50:.2f}s, p95 {p95:.2f}s"
    return [
        f"  submitted           {sum(t.submitted.values())}  ({_counts(t.submitted)})",
        f"  refused at submit   {sum(t.refused.values())}  {_counts(t.refused)}".rstrip(),
        f"  succeeded           {t.succeeded}",
        f"  failed              {sum(t.failed.values())}  {_counts(t.failed)}".rstrip(),
        f"  lost (no record)    {t.lost}",
        f"  stuck (not final)   {len(outcome.stuck)}",
        f"  followed streams    {f.opened} opened, {f.completed} whole"
        f"  {_counts(f.problems)}".rstrip(),
        f"  latency             {latency}  (created to finished, {len(t.latencies)} jobs)",
        f"  items deleted       {outcome.reaped} as TTL would ({outcome.reap_errors} errors)",
    ]


def detail_lines(outcome: Outcome) -> list[str]:
    examples = {**outcome.tally.examples, **outcome.follows.examples}
    if outcome.stuck:
        examples["not final at the end"] = outcome.stuck[:PER_KIND]
    lines = example_lines(examples)
    return ["  examples:", *(f"    {line}" for line in lines)] if lines else []


def write_report(path: Path, outcome: Outcome, args: dict[str, Any]) -> None:
    t = outcome.tally
    report = {
        "args": args,
        "window": asdict(outcome.window),
        "processes": [asdict(g) for g in outcome.growths],
        "jobs": {
            "submitted": dict(t.submitted),
            "refused": dict(t.refused),
            "succeeded": t.succeeded,
            "failed": dict(t.failed),
            "lost": t.lost,
            "stuck": outcome.stuck,
            "latency_p50_s": percentile(t.latencies, 50),
            "latency_p95_s": percentile(t.latencies, 95),
            "examples": t.examples,
        },
        "followed": {
            "opened": outcome.follows.opened,
            "whole": outcome.follows.completed,
            "problems": dict(outcome.follows.problems),
            "examples": outcome.follows.examples,
        },
        "items_deleted": outcome.reaped,
        "item_delete_errors": outcome.reap_errors,
        "problems": outcome.problems(),
    }
    path.write_text(json.dumps(report, indent=2, default=str))
