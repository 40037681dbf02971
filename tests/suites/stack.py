"""The local stack the suites run against: short timings, files under .headrace/suites/."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import boto3

from headrace.core.tables import jobs as job_table
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import LocalStack, StackOptions
from infra.provision import AwsClients
from tests.e2e.support import FAST_SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[2]
# The dev model is built once here and reused by every run (it is gitignored).
SUITES_HOME = REPO_ROOT / ".headrace" / "suites"
# A lapsed lease is retried within seconds and a job gives up after three receives.
SUITE_PARAMETERS = {"VisibilityTimeoutSeconds": "5", "MaxReceiveCount": "3"}


def add_place_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, help="logs and report (default .headrace/suites/<suite>-<time>)"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=SUITES_HOME / "home",
        help="HEADRACE_HOME of the stack: the dev model is built there once",
    )


def run_dir(name: str, out: Path | None) -> Path:
    """The directory for one run's logs and report: out, or .headrace/suites/<name>-<time>."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out or SUITES_HOME / f"{name}-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_stack(
    home: Path, out: Path, *, workers: int, settings: dict[str, str] | None = None
) -> LocalStack:
    """moto, the template's resources, the gateway and `workers` workers, logs in out/logs.

    Call it from the main thread: children die with the thread that started them."""
    stack = LocalStack(
        StackOptions(
            home=home,
            logs_dir=out / "logs",
            gateway_port=0,
            parameters=dict(SUITE_PARAMETERS),
            settings_env={**FAST_SETTINGS, **(settings or {})},
        )
    )
    stack.start(workers=workers)
    return stack


def aws_clients(stack: LocalStack) -> AwsClients:
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    return AwsClients.create(stack.aws_endpoint_url, session=session)


def add_api_key(stack: LocalStack, aws: AwsClients, api_key: str) -> None:
    """A second key, so a suite can ask for another key's jobs."""
    assert stack.resources is not None
    aws.dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, api_key, name="suite", now=time.time())
    )


def run_suite(name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A suite's `main`: SIGTERM unwinds like Ctrl-C, and either ends with exit status 130."""
    exit_cleanly_on_sigterm()
    try:
        return run(args)
    except KeyboardInterrupt as e:
        print(f"{name}: interrupted ({e}); every process it started was stopped", file=sys.stderr)
        return 130


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so `finally` stops every process we started."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
