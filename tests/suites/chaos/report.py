"""The chaos report: one line per figure, then the jobs behind every non-zero problem count."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.suites.chaos.audit import Findings

DETAIL_LINES = 10


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counter.most_common())


def report_lines(
    found: Findings, *, doors: Counter[str], seconds: float, followed: int
) -> list[str]:
    retried = sum(n for attempts, n in found.attempts.items() if attempts > 1)
    rate = found.succeeded / seconds if seconds > 0 else 0.0
    return [
        f"  submitted           {found.submitted}  ({_counts(doors)})",
        f"  refused at submit   {sum(found.refused.values())}  {_counts(found.refused)}".rstrip(),
        f"  succeeded           {found.succeeded}",
        f"  failed              {sum(found.failed.values())}  {_counts(found.failed)}".rstrip(),
        f"  other final         {sum(found.other_final.values())}"
        f"  {_counts(found.other_final)}".rstrip(),
        f"  stuck (not final)   {found.stuck_total}  {_counts(found.stuck)}".rstrip(),
        f"  lost (no record)    {len(found.lost)}",
        f"  retried             {retried}  (attempts {_counts(found.attempts)})",
        f"  double results      {len(found.double)}",
        f"  stream mismatches   {len(found.stream_mismatch)} stored,"
        f" {len(found.follower_mismatch)} delivered ({followed} streams followed)",
        f"  greedy mismatches   {len(found.greedy_mismatch)} of {found.greedy_checked} checked",
        f"  over max_new_tokens {len(found.over_max_new_tokens)}",
        f"  DLQ                 {found.dlq_messages} messages, {len(found.dlq_not_final)} whose job"
        f" is not final  (final: {_counts(found.dlq_final) or 'none'})",
        f"  queue left          {found.queue_left} messages",
        f"  follower problems   {len(found.follower_problems)} (drops, refusals; not a failure)",
        f"  re-delivered        {found.redelivered_events} events to {found.redelivered_streams}"
        " followers (same seq and content after a worker loss; not a failure)",
        f"  jobs/s              {rate:.2f}  ({found.succeeded} succeeded in {seconds:.1f}s)",
    ]


def detail_lines(found: Findings) -> list[str]:
    lines = []
    for title, items in (
        ("lost", found.lost),
        ("double results", found.double),
        ("stored stream mismatches", found.stream_mismatch),
        ("delivered stream mismatches", found.follower_mismatch),
        ("greedy mismatches", found.greedy_mismatch),
        ("over max_new_tokens", found.over_max_new_tokens),
        ("DLQ messages whose job is not final", found.dlq_not_final),
        ("follower problems", found.follower_problems),
    ):
        if items:
            lines.append(f"  {title}:")
            lines += [f"    {item}" for item in items[:DETAIL_LINES]]
            if len(items) > DETAIL_LINES:
                lines.append(f"    ... and {len(items) - DETAIL_LINES} more (report.json)")
    return lines


def write_json(path: Path, found: Findings, extra: dict[str, Any]) -> None:
    # Not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs and counts the pairs.
    findings = {name: getattr(found, name) for name in Findings.__dataclass_fields__}
    path.write_text(json.dumps({**extra, "findings": findings}, indent=2, default=str))
