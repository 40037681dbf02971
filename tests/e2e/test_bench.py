"""The benchmark harness runs end to end (tiny model, 8 jobs); never a timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_benchmark_prints_the_table_and_the_ratios(tmp_path: Path, model_home: Path) -> None:
    # model_home already holds (or will hold) the dev model the stack uploads.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--home",
            str(model_home),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    header = "| system | tokens/s | jobs/s | TTFT p50 | TTFT p95 | latency p50 | latency p95 |"
    assert header in out
    for system in ("engine limit", "headrace", "naive worker"):
        assert f"| {system} |" in out
    assert "headrace/engine = " in out
    assert "headrace/naive = " in out
    assert "(a) idle worker" in out and "(b) short job" in out

    (results_file,) = tmp_path.glob("runs/*/results.json")
    results = json.loads(results_file.read_text())
    for system in ("engine limit", "headrace", "naive worker"):
        assert results["table"][system]["tokens_per_s"] > 0
    assert len(results["ratios"]["headrace/engine"]) == 1
    # Every job ran to its max_new_tokens through the stack (none ended at the end token).
    assert not [n for n in results["notes"] if "ended early" in n]


@pytest.mark.timeout(300)
def test_quick_streaming_benchmark_prints_the_ratio_and_first_token_times(
    tmp_path: Path,
) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.streaming",
            "--quick",
            "--jobs",
            "4",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "streamed/unstreamed throughput = " in completed.stdout
    assert "time to first token on the socket: p50 " in completed.stdout
    assert "(4 jobs)" in completed.stdout


@pytest.mark.timeout(300)
def test_lanes_benchmark_measures_all_three_probes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.lanes", "--quick", "--backlog", "16", "--runs", "1"]
    completed = subprocess.run(
        [*command, "--probes", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for line in ("idle worker", "behind 16 batch jobs", "in the batch lane (FIFO)"):
        assert line in completed.stdout


@pytest.mark.timeout(300)
def test_quick_cancel_benchmark_prints_the_delays_and_the_baseline(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.cancel", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    out = completed.stdout
    assert "3 of 3 jobs cancelled while decoding" in out
    for label in ("cancel -> item stopped", "cancel -> CANCELLED seen by a poller"):
        assert f"{label}: p50 " in out
    assert "baseline, same run: check interval 500 ms, decode step " in out
