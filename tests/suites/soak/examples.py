"""The first few instances of each kind of problem, for the report: a run that goes wrong
repeats the same failure thousands of times."""

from __future__ import annotations

PER_KIND = 3


def keep_example(examples: dict[str, list[str]], kind: str, detail: str) -> None:
    """Add `detail` (a request id, a message) under `kind` unless PER_KIND are there already."""
    kept = examples.setdefault(kind, [])
    if len(kept) < PER_KIND:
        kept.append(detail)


def example_lines(examples: dict[str, list[str]]) -> list[str]:
    return [f"{kind}: {', '.join(details)}" for kind, details in examples.items()]
