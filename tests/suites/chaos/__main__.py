"""`python -m tests.suites.chaos [options]` (`make chaos ARGS="..."`): see README "Tests"."""

from __future__ import annotations

import argparse
import sys

from tests.suites.chaos.run import run
from tests.suites.stack import add_place_arguments, run_suite


def seconds_range(text: str) -> tuple[float, float]:
    """'5-10' (a random pause between the two) or '7'."""
    low, _, high = text.partition("-")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or MIN-MAX, got {text!r}") from None
    if not 0 < pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {text!r}")
    return pair


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.suites.chaos",
        description="Jobs under worker kills against a local stack (visibility timeout 5 s,"
        " 3 receives); exits 1 if a job is lost or stuck, a result doubled, or a stream or"
        " greedy text disagrees with the stored result.",
    )
    parser.add_argument("--jobs", type=int, default=300, help="jobs to submit (300)")
    parser.add_argument("--rate", type=float, default=0.0, help="jobs/s; 0: all at once (0)")
    parser.add_argument("--threads", type=int, default=16, help="submitting threads (16)")
    parser.add_argument("--workers", type=int, default=2, help="workers kept running (2)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs, each replaced (5)")
    parser.add_argument(
        "--kill-every", type=seconds_range, default=(5.0, 10.0), help="pause between faults (5-10)"
    )
    parser.add_argument(
        "--zombie", action="store_true", help="also freeze a worker past its lease (SIGSTOP)"
    )
    parser.add_argument("--freeze", type=float, default=12.0, help="seconds frozen (12)")
    parser.add_argument(
        "--follow-every", type=int, default=10, help="follow every Nth job over WebSocket (10)"
    )
    parser.add_argument("--wait", type=float, default=240.0, help="max wait for jobs to end (240)")
    parser.add_argument("--budget", type=float, default=540.0, help="whole run, seconds (540)")
    parser.add_argument("--seed", type=int, default=1)
    add_place_arguments(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.threads < 1 or args.workers < 1 or args.kills < 0:
        parser.error("--jobs, --threads and --workers must be at least 1, --kills at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_suite("chaos", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
