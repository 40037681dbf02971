"""The soak suite's plumbing (`make soak`): a half-minute run starts its stack, samples every
process, and prints and writes its report; SIGTERM ends a run with its report and stops every
process it started; the growth fit flags a process that does grow. The runs assert nothing
about the memory they find: that is the suite's own verdict."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.procinfo import children
from tests.e2e.dev_process import make_dev_home
from tests.suites.soak.__main__ import parse_args
from tests.suites.soak.follow import FollowTally
from tests.suites.soak.load import Tally
from tests.suites.soak.memory import Process, Sampler, growth, growth_limit
from tests.suites.soak.report import Outcome, Window
from tests.suites.soak.run import run
from tests.suites.stack import REPO_ROOT

STACK_PROCESSES = {"suite", "moto", "gateway", "worker-1"}
JOB_LABELS = ("submitted", "succeeded", "failed", "lost (no record)", "stuck (not final)")


@dataclass
class Interrupted:
    """A soak run stopped with SIGTERM once its load ran."""

    code: int
    printed: str
    started: dict[int, str]  # its child processes when the signal went
    left: list[int]  # those of them still there 5 s after it ended


def interrupt(soak: subprocess.Popen[str]) -> Interrupted:
    assert soak.stdout is not None
    progress = 0
    while progress < 2:  # the load is running, not just the stack
        line = soak.stdout.readline()
        assert line, "the soak ended before its load began"
        progress += line.startswith("soak: 0m")
    started = children(soak.pid)
    soak.send_signal(signal.SIGTERM)
    printed = soak.stdout.read()
    code = soak.wait(60)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in started if Path(f"/proc/{pid}").exists()]
    return Interrupted(code, printed, started, left)


@pytest.fixture(scope="module")
def sigterm_run(
    dev_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Future[Interrupted]]]:
    """(its --out, its outcome) of a soak in its own process, stopped with SIGTERM once its load
    runs. Driven from a thread from the start of the module, so it overlaps the half-minute
    run: the two stacks share nothing (this one has a home of its own), and neither test
    asserts a time."""
    place = tmp_path_factory.mktemp("sigterm")
    home, out = make_dev_home(place / "home", dev_model_dir), place / "soak"
    command = [sys.executable, "-m", "tests.suites.soak", "--minutes", "10", "--sample-every"]
    soak = subprocess.Popen(
        [*command, "0.5", "--out", str(out), "--home", str(home)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="soak-sigterm") as pool:
            try:
                yield out, pool.submit(interrupt, soak)
            finally:
                soak.kill()  # if it still runs: the thread then ends too
    finally:
        soak.wait()
        if soak.stdout is not None:
            soak.stdout.close()


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("sigterm_run")  # started first: that run overlaps this one
def test_a_short_soak_reports_every_process(
    model_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak"
    # 3 jobs/s: a steady load the worker keeps up with on a busy machine, so the drain after
    # it is short (a backlog left at the end is waited for).
    short = ["--minutes", "0.3", "--sample-every", "3", "--rate", "3"]
    args = parse_args([*short, "--out", str(out), "--home", str(model_home)])

    code = run(args)

    printed = capsys.readouterr().out
    assert code in (0, 1), printed
    assert printed.count("soak: 0m") >= 6, printed  # a progress line per sample
    for label in JOB_LABELS:
        assert f"\n  {label} " in printed, label
    report = json.loads((out / "report.json").read_text())
    processes = {p["label"]: p for p in report["processes"]}
    assert set(processes) >= STACK_PROCESSES, processes
    for label in STACK_PROCESSES:
        row = processes[label]
        assert row["samples"] >= 5, row
        assert 10 < row["start_mib"] <= row["peak_mib"], row
        assert 10 < row["end_mib"] <= row["peak_mib"], row
        assert isinstance(row["mib_per_hour"], float), row
        assert f"\n    {label} " in printed, label
    assert sum(report["jobs"]["submitted"].values()) >= 50, report["jobs"]
    assert report["jobs"]["latency_p50_s"] is not None
    assert {"http", "sync", "ws-complete", "ws-subscribe"} <= set(report["jobs"]["submitted"])
    with (out / "samples.csv").open() as f:
        sampled = {row["process"] for row in csv.DictReader(f)}
    assert sampled >= STACK_PROCESSES


@pytest.mark.timeout(120)
def test_sigterm_stops_the_run_with_its_report_and_every_process(
    sigterm_run: tuple[Path, Future[Interrupted]],
) -> None:
    out, outcome = sigterm_run
    ended = outcome.result(timeout=110)
    assert ended.code == 130, ended.printed
    assert "interrupted (SIGTERM)" in ended.printed, ended.printed
    assert "\n    moto " in ended.printed and "\n    worker-1 " in ended.printed, ended.printed
    assert (out / "report.json").is_file()
    assert len(ended.started) >= 3, ended.started  # moto, gateway, a worker
    assert not ended.left, ended.started


GROWER = """
import sys
kept = []
for line in sys.stdin:
    if line.strip() == "grow":
        kept.append(b"x" * (8 << 20))  # written, so resident
    print("ok", flush=True)
"""


@pytest.fixture
def grower() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield process
    process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def test_a_growing_process_fails_the_verdict_and_a_flat_one_does_not(
    grower: subprocess.Popen[str], tmp_path: Path
) -> None:
    assert grower.stdin is not None and grower.stdout is not None
    sampler = Sampler(
        [Process("grower", grower.pid), Process("flat", grower.pid)],
        every=1.0,
        csv_path=tmp_path / "samples.csv",
        progress=lambda elapsed, rss: None,
    )
    flat = sampler.series[1]
    for _ in range(6):
        grower.stdin.write("grow\n")
        grower.stdin.flush()
        assert grower.stdout.readline() == "ok\n"
        sampler.sample()
        flat.rss[-1] = flat.rss[0]  # the same samples, held flat

    window = sampler.series[0].times[-1]
    limit = growth_limit(50.0, 8.0, window)
    growths = [growth(series, warmup=0.0) for series in sampler.series]
    outcome = Outcome(Tally(), FollowTally(), [], growths, Window(window, 0.0, limit))

    grown = growths[0]
    assert grown.end_mib is not None and grown.start_mib is not None
    assert grown.end_mib - grown.start_mib >= 5 * 8 * 0.9
    assert grown.mib_per_hour is not None and grown.mib_per_hour > limit
    assert growths[1].mib_per_hour == 0.0
    assert outcome.problems() == [f"grower grows {grown.mib_per_hour:+.1f} MiB/h"]


def test_the_growth_limit_rises_only_for_a_window_too_short_to_judge() -> None:
    assert growth_limit(50.0, 8.0, 3600.0) == 50.0
    assert growth_limit(50.0, 8.0, 1800.0) == 50.0
    assert growth_limit(50.0, 8.0, 360.0) == pytest.approx(80.0)
