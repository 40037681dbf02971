"""The benchmark harnesses run end to end (tiny models, a few jobs); never a timed assertion.

The module's benchmarks start together, each in its own process with its own stack and home:
most of a run is waiting (a stack starting, a worker loading, a probe's pause), so on two cores
they overlap. Each test waits for its own run and reads what it printed and wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.dev_process import make_dev_home

ROOT = Path(__file__).resolve().parents[2]

# `python -m ARGS --out OUT` of each test, by its name; a run's stack lives in OUT/home.
RUNS: dict[str, str] = {
    "test_quick_benchmark_prints_the_table_and_the_ratios": "bench --quick --probe-tries 1",
    "test_quick_streaming_benchmark_prints_the_ratio_and_first_token_times": (
        "bench.streaming --quick --jobs 4 --rounds 1"
    ),
    "test_lanes_benchmark_measures_all_three_probes": (
        "bench.lanes --quick --backlog 16 --runs 1 --probes 1"
    ),
    "test_quick_cancel_benchmark_prints_the_delays_and_the_baseline": "bench.cancel --quick",
    "test_quick_websocket_routes_benchmark_prints_both_parts_against_http": (
        "bench.websocket_routes --quick --jobs 4 --rounds 1 --lone 2"
    ),
}


@dataclass
class BenchRun:
    """One benchmark's process; what it prints goes to two files beside its --out."""

    process: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(cls, args: list[str], out: Path) -> BenchRun:
        with (
            (out.parent / "stdout").open("wb") as stdout,
            (out.parent / "stderr").open("wb") as stderr,
        ):
            process = subprocess.Popen(
                [sys.executable, "-m", *args, "--out", str(out)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        return cls(process, out)

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        code = self.process.wait(timeout)
        printed, errors = ((self.out.parent / name).read_text() for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(self.process.args, code, printed, errors)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # its stack's processes die with it
            self.process.wait()


@pytest.fixture(scope="module")
def bench_runs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    dev_model_dir: Path,
) -> Iterator[dict[str, BenchRun]]:
    """The benchmarks of this module's selected tests, all started at once."""
    selected = {item.name for item in request.session.items if item.path == request.path}
    runs: dict[str, BenchRun] = {}
    try:
        for name, args in RUNS.items():
            if name in selected:
                out = tmp_path_factory.mktemp("bench") / "out"
                # A home of its own with the session's dev model: no run builds it, and no
                # two stacks write one home's API key file at once.
                make_dev_home(out / "home", dev_model_dir)
                runs[name] = BenchRun.start(args.split(), out)
        yield runs
    finally:
        for run in runs.values():
            run.stop()


@pytest.fixture
def bench(request: pytest.FixtureRequest, bench_runs: dict[str, BenchRun]) -> BenchRun:
    return bench_runs[request.node.name]


@pytest.mark.timeout(300)
def test_quick_benchmark_prints_the_table_and_the_ratios(bench: BenchRun) -> None:
    completed = bench.wait(timeout=280)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    header = "| system | tokens/s | jobs/s | TTFT p50 | TTFT p95 | latency p50 | latency p95 |"
    assert header in out
    for system in ("engine limit", "headrace", "naive worker"):
        assert f"| {system} |" in out
    assert "headrace/engine = " in out
    assert "headrace/naive = " in out
    assert "(a) idle worker" in out and "(b) short job" in out

    (results_file,) = bench.out.glob("runs/*/results.json")
    results = json.loads(results_file.read_text())
    for system in ("engine limit", "headrace", "naive worker"):
        assert results["table"][system]["tokens_per_s"] > 0
    assert len(results["ratios"]["headrace/engine"]) == 1
    # Every job ran to its max_new_tokens through the stack (none ended at the end token).
    assert not [n for n in results["notes"] if "ended early" in n]


@pytest.mark.timeout(300)
def test_quick_streaming_benchmark_prints_the_ratio_and_first_token_times(bench: BenchRun) -> None:
    completed = bench.wait(timeout=280)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "streamed/unstreamed throughput = " in completed.stdout
    assert "time to first token on the socket: p50 " in completed.stdout
    assert "(4 jobs)" in completed.stdout


@pytest.mark.timeout(300)
def test_lanes_benchmark_measures_all_three_probes(bench: BenchRun) -> None:
    completed = bench.wait(timeout=280)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for line in ("idle worker", "behind 16 batch jobs", "in the batch lane (FIFO)"):
        assert line in completed.stdout


@pytest.mark.timeout(300)
def test_quick_cancel_benchmark_prints_the_delays_and_the_baseline(bench: BenchRun) -> None:
    completed = bench.wait(timeout=280)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "3 of 3 jobs cancelled while decoding" in out
    for label in ("cancel -> item stopped", "cancel -> CANCELLED seen by a poller"):
        assert f"{label}: p50 " in out
    assert "baseline, same run: check interval 500 ms, decode step " in out


@pytest.mark.timeout(300)
def test_quick_websocket_routes_benchmark_prints_both_parts_against_http(bench: BenchRun) -> None:
    completed = bench.wait(timeout=280)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "a lone job on an idle worker, 2 of each, p50: over HTTP submit -> first token " in out
    assert " times HTTP's" in out
    assert "arrival of 4 jobs at once, no worker; medians of 1 rounds:" in out
    for way in ("HTTP", "WebSocket, 1 socket a job", "WebSocket, 4 sockets a job"):
        assert f"| {way} | " in out
