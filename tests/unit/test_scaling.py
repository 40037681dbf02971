"""The scaling rule (headrace/core/scaling.py): zero to one, out on backlog, in after cooldown."""

from __future__ import annotations

import pytest

from headrace.core.scaling import (
    Backlog,
    LaneCounts,
    ScalingPolicy,
    ScalingState,
    decide,
    wanted_workers,
)

POLICY = ScalingPolicy(
    target_backlog_per_worker=64,
    max_workers=10,
    scale_out_after_seconds=180,
    scale_in_after_seconds=900,
    scale_in_cooldown_seconds=300,
    wake_after_seconds=60,
)


def run(
    policy: ScalingPolicy,
    backlog: Backlog,
    state: ScalingState,
    *,
    start: float,
    seconds: float,
    running: int | None = None,
    step: float = 60.0,
) -> ScalingState:
    """Look every `step` seconds for `seconds` with the same backlog."""
    now = start
    while now <= start + seconds:
        workers = state.desired if running is None else running
        state = decide(policy, backlog, workers, state, now)
        now += step
    return state


def test_backlog_counts_both_lanes_visible_and_in_flight() -> None:
    backlog = Backlog.of_lanes(
        [LaneCounts(visible=3, in_flight=5), LaneCounts(visible=7, in_flight=11)]
    )
    assert (backlog.visible, backlog.in_flight, backlog.total) == (10, 16, 26)


def test_any_backlog_with_zero_workers_asks_for_exactly_one() -> None:
    for visible in (1, 64, 100_000):
        state = decide(POLICY, Backlog(visible=visible), 0, ScalingState(), now=0)
        assert state.desired == 0  # one datapoint of the alarm first
        state = decide(POLICY, Backlog(visible=visible), 0, state, now=60)
        assert state.desired == 1, visible


def test_without_the_wake_rule_zero_stays_zero() -> None:
    policy = ScalingPolicy(target_backlog_per_worker=64, max_workers=10, wake_from_zero=False)
    state = run(policy, Backlog(visible=10_000), ScalingState(), start=0, seconds=3600)
    assert state.desired == 0


def test_nothing_visible_wakes_nothing() -> None:
    # Messages in flight with no worker desired are held by a worker being stopped: they come
    # back visible when its lease lapses, and then the rule wakes one.
    state = run(POLICY, Backlog(in_flight=5), ScalingState(), start=0, seconds=600)
    assert state.desired == 0


def test_backlog_per_worker_over_the_target_adds_workers() -> None:
    state = ScalingState(desired=2)
    backlog = Backlog(visible=500)  # 250 a worker against 64: ceil(500 / 64) = 8
    state = decide(POLICY, backlog, 2, state, now=0)
    assert state.desired == 2
    state = run(POLICY, backlog, state, start=60, seconds=120)
    assert state.desired == 8


def test_in_flight_jobs_count_as_backlog() -> None:
    assert wanted_workers(POLICY, Backlog(visible=0, in_flight=300), 2, 2) == 5
    assert wanted_workers(POLICY, Backlog(visible=300, in_flight=0), 2, 2) == 5
    assert wanted_workers(POLICY, Backlog(visible=100, in_flight=200), 2, 2) == 5


def test_never_above_max_workers() -> None:
    state = run(POLICY, Backlog(visible=10**6), ScalingState(desired=1), start=0, seconds=600)
    assert state.desired == POLICY.max_workers


def test_zero_backlog_reaches_zero_workers_after_the_cooldown_not_before() -> None:
    state = ScalingState(desired=4)
    state = run(POLICY, Backlog(), state, start=0, seconds=840)  # 15 looks: 0..840 s
    assert state.desired == 4
    state = decide(POLICY, Backlog(), 4, state, now=900)
    assert state.desired == 0


def test_backlog_in_between_resets_the_scale_in_wait() -> None:
    state = run(POLICY, Backlog(), ScalingState(desired=4), start=0, seconds=600)
    state = decide(POLICY, Backlog(visible=256), 4, state, now=660)  # exactly 4 workers' worth
    state = run(POLICY, Backlog(), state, start=720, seconds=840)
    assert state.desired == 4
    assert decide(POLICY, Backlog(), 4, state, now=1620).desired == 0


def test_scale_in_cooldown_spaces_successive_scale_ins() -> None:
    state = run(POLICY, Backlog(visible=128), ScalingState(desired=8), start=0, seconds=900)
    assert state.desired == 2  # the first scale-in, at 900 s
    state = run(POLICY, Backlog(visible=64), state, start=960, seconds=180)  # until 1140 s
    assert state.desired == 2  # the cooldown of 300 s holds
    state = decide(POLICY, Backlog(visible=64), 2, state, now=1200)
    assert state.desired == 1


def test_min_workers_is_kept() -> None:
    policy = ScalingPolicy(target_backlog_per_worker=64, max_workers=10, min_workers=2)
    state = run(policy, Backlog(), ScalingState(desired=5), start=0, seconds=7200)
    assert state.desired == 2


def test_dividing_by_running_tasks_overshoots_while_tasks_start() -> None:
    running_policy = ScalingPolicy(
        target_backlog_per_worker=64, max_workers=100, divide_by="running"
    )
    backlog = Backlog(visible=640)
    assert wanted_workers(POLICY, backlog, running=1, desired=10) == 10
    assert wanted_workers(running_policy, backlog, running=1, desired=10) == 100


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_backlog_per_worker": 0, "max_workers": 1},
        {"target_backlog_per_worker": 1, "max_workers": 1, "min_workers": 2},
        {"target_backlog_per_worker": 1, "max_workers": 1, "scale_in_cooldown_seconds": -1},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicy(**kwargs)  # type: ignore[arg-type]
