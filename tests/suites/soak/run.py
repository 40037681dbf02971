"""One soak run: stack, steady load with memory sampled, a bounded drain, the report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from headrace.dev.stack import LocalStack
from tests.suites.soak.follow import StreamFollowers
from tests.suites.soak.load import Load
from tests.suites.soak.memory import Sampler, growth, growth_limit, stack_processes
from tests.suites.soak.reap import Reaper
from tests.suites.soak.report import (
    Outcome,
    Window,
    detail_lines,
    job_lines,
    memory_lines,
    write_report,
)
from tests.suites.stack import aws_clients, run_dir, start_stack

# After the load stops: how long the jobs still queued or decoding may take to end.
DRAIN_SECONDS = 60.0
# Left out of the fit: imports, caches and allocator arenas filling as the load begins.
WARMUP_SHARE = 0.1
WARMUP_MAX_SECONDS = 120.0
# Growth under this many MiB over the whole window never fails a run (see growth_limit).
GROWTH_FLOOR_MIB = 8.0
SUBMIT_THREADS = 8


def warmup_seconds(load_seconds: float) -> float:
    return min(WARMUP_SHARE * load_seconds, WARMUP_MAX_SECONDS)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


class Progress:
    """The line printed at every sample."""

    def __init__(self, load: Load, followers: StreamFollowers, load_seconds: float) -> None:
        self.load = load
        self.followers = followers
        self.load_seconds = load_seconds

    def __call__(self, elapsed: float, rss: dict[str, float]) -> None:
        tally = self.load.tally
        memory = ", ".join(f"{label} {mib:.1f}" for label, mib in rss.items())
        print(
            f"soak: {_clock(elapsed)} of {_clock(self.load_seconds)}"
            f"  jobs {sum(tally.submitted.values())} accepted, {tally.succeeded} ok,"
            f" {sum(tally.failed.values()) + tally.lost} failed/lost,"
            f" {self.load.pending()} in flight, {self.followers.open_now} streams open"
            f"  RSS MiB: {memory}",
            flush=True,
        )


def steady_load(load: Load, *, rate: float, seconds: float) -> str | None:
    """Submit `rate` jobs a second for `seconds`; returns why it stopped early, or None."""
    began = time.monotonic()
    index = 0
    try:
        while (at := began + index / rate) < began + seconds:
            time.sleep(max(0.0, at - time.monotonic()))
            load.submit(index)
            index += 1
        time.sleep(max(0.0, began + seconds - time.monotonic()))
    except KeyboardInterrupt as e:
        return f"interrupted ({e})"
    return None


def run(args: argparse.Namespace) -> int:
    out = run_dir("soak", args.out)
    print(f"soak: logs, samples.csv and report.json in {out}", flush=True)
    started = time.monotonic()
    stack = start_stack(args.home, out, workers=args.workers)
    print(f"soak: stack up in {time.monotonic() - started:.1f}s ({stack.base_url})", flush=True)
    try:
        outcome, stopped_early = _soak(stack, args, out)
    finally:
        stack.stop()
    return _print_report(outcome, args, out=out, stopped_early=stopped_early)


def _soak(stack: LocalStack, args: argparse.Namespace, out: Path) -> tuple[Outcome, str | None]:
    assert stack.resources is not None
    aws = aws_clients(stack)
    reaper = Reaper(aws, stack.resources.table_name)
    followers = StreamFollowers(stack.ws_url, stack.api_key)
    load = Load(
        stack.base_url,
        stack.api_key,
        followers,
        follow_every=args.follow_every,
        sync_every=args.sync_every,
        threads=SUBMIT_THREADS,
        seed=args.seed,
        on_done=(lambda request_id: None) if args.keep_items else reaper.finished,
    )
    sampler = Sampler(
        stack_processes(stack),
        every=args.sample_every,
        csv_path=out / "samples.csv",
        progress=Progress(load, followers, args.minutes * 60),
    )
    try:
        followers.start()
        load.start()
        reaper.start()
        sampler.start()
        stopped_early = steady_load(load, rate=args.rate, seconds=args.minutes * 60)
        sampler.stop()
        drain = 10.0 if stopped_early else DRAIN_SECONDS
        print(f"soak: load stopped; waiting up to {drain:g}s for jobs to end", flush=True)
        stuck = load.drain(drain)
        followers.stop()
    finally:
        sampler.stop()
        load.stop()  # first: no new follower after the followers stop
        followers.stop()
        reaper.stop()
        aws.close()
    sampled = sampler.ended - sampler.began
    warmup = warmup_seconds(sampled)
    window = Window(
        seconds=sampled,
        warmup=warmup,
        limit=growth_limit(args.max_growth_mib_per_hour, GROWTH_FLOOR_MIB, sampled - warmup),
    )
    growths = [growth(series, warmup) for series in sampler.series]
    outcome = Outcome(
        tally=load.tally,
        follows=followers.tally,
        stuck=stuck,
        growths=growths,
        window=window,
        reaped=reaper.deleted,
        reap_errors=reaper.errors,
    )
    return outcome, stopped_early


def _print_report(
    outcome: Outcome, args: argparse.Namespace, *, out: Path, stopped_early: str | None
) -> int:
    print()
    print(
        f"soak report: {args.minutes:g} min at {args.rate:g} jobs/s, {args.workers} worker(s),"
        f" following every {args.follow_every}th, sync every {args.sync_every}th"
        + (f"; {stopped_early}" if stopped_early else "")
    )
    for line in [*job_lines(outcome), *memory_lines(outcome.growths, outcome.window)]:
        print(line)
    for line in detail_lines(outcome):
        print(line)
    write_report(out / "report.json", outcome, vars(args))
    problems = outcome.problems()
    print(f"soak: {'FAIL: ' + '; '.join(problems) if problems else 'PASS'}")
    print(f"soak: report {out}/report.json, samples {out}/samples.csv, logs {out}/logs")
    if stopped_early:
        return 130
    return 1 if problems else 0
