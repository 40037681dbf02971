"""`python -m tests.suites.soak [options]` (`make soak ARGS="..."`): see README "Tests"."""

from __future__ import annotations

import argparse
import sys

from tests.suites.soak.run import GROWTH_FLOOR_MIB, run
from tests.suites.stack import add_place_arguments, run_suite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.suites.soak",
        description="Steady load on a local stack with the resident memory of every process"
        " sampled; prints each one's growth per hour and exits 1 if a job is lost, failed or"
        " stuck, a followed stream is cut, a process exits, or one grows past the limit.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="steady load, minutes (30)")
    parser.add_argument("--rate", type=float, default=2.0, help="jobs submitted a second (2)")
    parser.add_argument(
        "--follow-every",
        type=int,
        default=4,
        help="follow every Nth job over WebSocket: connect, complete or subscribe, read to the"
        " last event, disconnect (4; 0: none)",
    )
    parser.add_argument(
        "--sync-every", type=int, default=5, help="every Nth other job by the sync route (5)"
    )
    parser.add_argument(
        "--sample-every", type=float, default=30.0, help="seconds between RSS samples (30)"
    )
    parser.add_argument("--workers", type=int, default=1, help="workers (1)")
    parser.add_argument(
        "--max-growth-mib-per-hour",
        type=float,
        default=50.0,
        help="fail if a process's RSS grows faster after the warm-up (50: at the default rate a"
        " job leaving 7 KiB behind is 50 MiB/h, a day of it over a GiB, while caches and"
        " allocator arenas fill during the warm-up and stay; a fitted growth under"
        f" {GROWTH_FLOOR_MIB:g} MiB over the window never fails, so a short run judges only"
        " large growth)",
    )
    parser.add_argument(
        "--keep-items",
        action="store_true",
        help="keep every job's items in the local DynamoDB; by default they are deleted 10 s"
        " after the job has ended and its follower left, as TTL would: moto never expires an"
        " item, and its RSS would grow with the data it holds",
    )
    parser.add_argument("--seed", type=int, default=1)
    add_place_arguments(parser)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.sample_every <= 0:
        parser.error("--minutes, --rate and --sample-every must be above 0")
    if args.workers < 1 or args.follow_every < 0 or args.sync_every < 0:
        parser.error("--workers must be at least 1, --follow-every and --sync-every at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_suite("soak", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
