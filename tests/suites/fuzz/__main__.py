"""`python -m tests.suites.fuzz [options]` (`make fuzz ARGS="..."`): see README "Tests"."""

from __future__ import annotations

import argparse
import sys

from tests.suites.fuzz.run import run
from tests.suites.fuzz.schema_run import DEFAULT_CHECKS
from tests.suites.stack import add_place_arguments, run_suite


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.suites.fuzz",
        description="schemathesis over openapi.json, hostile HTTP requests and WebSocket frames"
        " against a local stack; exits 1 on a 5xx, an unanswered request or frame, a wrong"
        " answer, an accepted job that fails, or a failed schemathesis check.",
    )
    parser.add_argument(
        "--max-examples", type=int, default=100, help="schemathesis cases per operation (100)"
    )
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    parser.add_argument("--checks", default=DEFAULT_CHECKS, help="schemathesis checks")
    parser.add_argument("--streams", type=int, default=50, help="concurrent WebSocket streams")
    parser.add_argument("--budget", type=float, default=540.0, help="whole run, seconds (540)")
    parser.add_argument("--seed", type=int, default=1)
    add_place_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_suite("fuzz", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
