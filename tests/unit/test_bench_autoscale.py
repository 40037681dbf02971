"""The autoscaling simulator (bench/autoscale.py): prints its table, deterministically, and its
fleet model does what it says (no timed assertion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import autoscale
from bench.autoscale_model import AlwaysOn, ColdStart, SimConfig, simulate
from headrace.core.scaling import ScalingPolicy

POLICY = ScalingPolicy(target_backlog_per_worker=16, max_workers=8)
CONFIG = SimConfig(step_s=1.0, drain_s=3600.0)


def quiet_burst(at_step: int, jobs: int, steps: int) -> list[int]:
    counts = [0] * steps
    counts[at_step] = jobs
    return counts


def test_quick_run_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert autoscale.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert autoscale.HEADER in out
    rows = [line for line in out.splitlines() if line.startswith("| burst") or "| spike" in line]
    assert len(rows) == 8  # two traces, four policies
    for policy in (
        "headrace (target 16",
        "backlog per running task",
        "SageMaker-style",
        "always-on",
    ):
        assert sum(policy in row for row in rows) == 2, policy
    sagemaker = [row for row in rows if "SageMaker-style" in row]
    assert all("| never |" in row for row in sagemaker)
    assert "simulated in" in out


def test_runs_are_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for _ in range(2):
        autoscale.main(["--quick", "--seed", "3", "--out", str(tmp_path)])
        outputs.append(capsys.readouterr().out.rsplit("simulated in", 1)[0])
    assert outputs[0] == outputs[1]


def test_scaling_from_zero_waits_for_the_whole_cold_chain() -> None:
    cold = ColdStart()
    result = simulate(quiet_burst(0, 10, 600), POLICY, CONFIG)
    assert result.unserved == 0
    # The wake alarm's datapoint, then boot, pull and model load.
    assert result.worst_after_idle_s >= cold.cold_s + POLICY.wake_after_seconds
    assert result.gpu_hours > 0


def test_a_worker_that_lingers_starts_warm() -> None:
    counts = quiet_burst(0, 10, 4000)
    counts[2000] = 10  # after the first worker was stopped, before its instance goes
    result = simulate(counts, POLICY, SimConfig(step_s=1.0, idle_gap_s=600.0, drain_s=3600))
    cold = CONFIG.cold
    assert result.unserved == 0
    # The first job after idle waited for a cold start; the second for a warm one only.
    waits = sorted(w for w, _ in result.waits.items())
    assert waits[-1] >= cold.cold_s
    assert any(cold.warm_s <= w < cold.cold_s for w in waits)


def test_target_tracking_alone_never_leaves_zero() -> None:
    no_wake = ScalingPolicy(target_backlog_per_worker=16, max_workers=8, wake_from_zero=False)
    result = simulate(quiet_burst(0, 10, 600), no_wake, CONFIG)
    assert (result.unserved, result.gpu_hours) == (10, 0.0)
    assert result.wait_percentile(0.5) == float("inf")


def test_always_on_workers_serve_at_once_and_cost_the_whole_time() -> None:
    result = simulate(quiet_burst(10, 10, 3600), AlwaysOn(2), CONFIG)
    assert result.unserved == 0
    assert result.wait_percentile(0.99) == 0.0
    assert result.gpu_hours == pytest.approx(2.0, rel=0.01)
