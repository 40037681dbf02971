"""Batch selection: similar prompt lengths together, the oldest job always included."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from worker.engine import SamplingParams
from worker.scheduler import select_batch

GREEDY = SamplingParams(top_k=1)
SAMPLED = SamplingParams(top_k=0, temperature=0.7)


def job(prompt_len: int, params: SamplingParams = GREEDY, skipped: int = 0) -> Any:
    return SimpleNamespace(prompt=["t"] * prompt_len, params=params, skipped=skipped)


def lengths(batch: list[Any]) -> list[int]:
    return [len(p.prompt) for p in batch]


def test_small_queue_goes_whole_sorted_by_length() -> None:
    pending = [job(30), job(10), job(20)]
    assert lengths(select_batch(cast(Any, pending), 8)) == [10, 20, 30]


def test_prompts_too_far_apart_do_not_share_a_batch() -> None:
    pending = [job(25), job(225), job(140), job(30)]
    assert lengths(select_batch(cast(Any, pending), 16)) == [25, 30]


def test_the_fullest_window_within_the_spread_wins() -> None:
    pending = [job(200), job(10), job(60), job(70), job(80), job(90), job(100)]
    assert lengths(select_batch(cast(Any, pending), 16)) == [60, 70, 80, 90, 100]


def test_the_tightest_window_among_all_pending() -> None:
    pending = [job(100), job(10), job(250), job(95), job(12), job(11), job(240), job(13)]
    assert lengths(select_batch(cast(Any, pending), 4)) == [10, 11, 12, 13]


def test_a_job_passed_over_twice_anchors_the_next_batch() -> None:
    pending = [job(300, skipped=2), *[job(n) for n in (10, 11, 12, 13, 14, 290)]]
    batch = select_batch(cast(Any, pending), 3)
    assert lengths(batch) == [290, 300]
    lone = [job(300, skipped=2), *[job(n) for n in (10, 11, 12)]]
    assert lengths(select_batch(cast(Any, lone), 3)) == [300]


def test_a_job_passed_over_once_does_not_anchor_yet() -> None:
    pending = [job(300, skipped=1), *[job(n) for n in (10, 11, 12, 13, 14)]]
    assert lengths(select_batch(cast(Any, pending), 3)) == [10, 11, 12]


def test_only_jobs_with_the_anchors_sampling_options() -> None:
    pending = [job(10, SAMPLED), job(10), job(11, SAMPLED), job(12)]
    batch = select_batch(cast(Any, pending), 8)
    assert all(p.params == SAMPLED for p in batch)
    assert len(batch) == 2


def test_empty() -> None:
    assert select_batch([], 4) == []
