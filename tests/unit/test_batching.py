"""The batch policy: similar prompt lengths together, the most work first, none starved."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from worker.batching import (
    MAX_PROMPT_SPREAD,
    MAX_WAIT_S,
    batch_seconds,
    plan,
    plan_width,
    seconds_left,
    select_batch,
    step_at,
)
from worker.engine import SamplingParams

GREEDY = SamplingParams(top_k=1)
SAMPLED = SamplingParams(top_k=0, temperature=0.7)


@dataclass
class Job:
    prompt_len: int
    params: SamplingParams = GREEDY
    held_since: float = 0.0
    remaining_tokens: int = 32
    prompt: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.prompt = ["t"] * self.prompt_len


def lengths(batch: list[Job]) -> list[int]:
    return [len(p.prompt) for p in batch]


def planned(pending: list[Job], size: int) -> list[list[int]]:
    return [lengths(b) for b in plan(pending, size)]


def test_a_small_queue_is_one_batch_sorted_by_length() -> None:
    assert planned([Job(30), Job(10), Job(20)], 8) == [[10, 20, 30]]


def test_prompts_too_far_apart_do_not_share_a_batch() -> None:
    far = 30 + MAX_PROMPT_SPREAD + 1
    assert planned([Job(25), Job(far), Job(30)], 16) == [[far], [25, 30]]


def test_batches_are_cut_from_the_longest_prompts_down() -> None:
    pending = [Job(n) for n in (10, 11, 12, 13, 14)]
    assert planned(pending, 2) == [[13, 14], [11, 12], [10]]


def test_a_known_burst_is_cut_as_the_engine_limit_cuts_it() -> None:
    # bench/engine_limit.py's "prompt" strategy: sorted by prompt length, cut in batches of 16.
    rng = random.Random(0)
    pending = [Job(rng.randint(8, 256)) for _ in range(64)]
    expected = sorted(lengths(pending))
    assert planned(pending, 16) == [expected[i : i + 16] for i in (48, 32, 16, 0)]


def test_the_batch_with_the_most_work_starts_first() -> None:
    full = [Job(100 + i) for i in range(8)]
    assert lengths(select_batch([Job(300), *full], 8, now=0)) == lengths(full)
    assert lengths(select_batch([Job(300, remaining_tokens=2000), *full], 8, now=0)) == [300]


def test_the_plan_runs_longest_first_and_leaves_no_stragglers() -> None:
    rng = random.Random(1)
    pending = [Job(rng.randint(8, 256), remaining_tokens=rng.randint(16, 128)) for _ in range(40)]
    started = []
    while pending:
        batch = select_batch(pending, 16, now=MAX_WAIT_S / 2)
        started.append(batch)
        pending = [p for p in pending if p not in batch]
    assert len(started) == 3  # as few as 40 jobs in batches of 16 allow
    assert min(lengths(started[0])) > max(lengths(started[1]))
    assert min(lengths(started[1])) > max(lengths(started[2]))
    assert all(max(lengths(b)) - min(lengths(b)) <= MAX_PROMPT_SPREAD for b in started)


def test_a_job_held_too_long_goes_first() -> None:
    old = Job(10, held_since=0.0)
    pending = [old, *[Job(n, held_since=5.0) for n in (200, 201, 202)]]
    assert lengths(select_batch(pending, 3, now=MAX_WAIT_S - 1)) == [200, 201, 202]
    assert select_batch(pending, 3, now=MAX_WAIT_S) == [old]


def test_among_jobs_held_too_long_the_oldest_goes_first() -> None:
    pending = [Job(200, held_since=1.0), Job(10, held_since=0.0), Job(210, held_since=2.0)]
    assert lengths(select_batch(pending, 4, now=MAX_WAIT_S + 5)) == [10]


def test_no_job_waits_for_ever_behind_a_stream_of_bigger_batches() -> None:
    lonely = Job(500, held_since=0.0)
    pending = [lonely]
    now = 0.0
    while True:
        # A full batch of company arrives every 10 s, and each batch takes 10 s.
        pending += [Job(100 + i, held_since=now) for i in range(8)]
        batch = select_batch(pending, 8, now=now)
        if lonely in batch:
            break
        pending = [p for p in pending if p not in batch]
        now += 10.0
    assert now == MAX_WAIT_S


def test_a_batch_has_one_set_of_sampling_options() -> None:
    pending = [Job(10, SAMPLED), Job(10), Job(11, SAMPLED), Job(12), Job(13)]
    assert planned(pending, 8) == [[10, 11], [10, 12, 13]]
    batch = select_batch(pending, 8, now=0)
    assert lengths(batch) == [10, 12, 13]
    assert {p.params for p in batch} == {GREEDY}


def test_nothing_held_nothing_planned() -> None:
    assert plan([], 4) == []
    assert select_batch([], 4, now=0) == []


# One replica's step at each width, all replicas decoding: timed at warm-up on 2 EPYC cores
# (trials of 389.6, 527.7 and 725.9 tokens/s with 2 replicas).
CPU_STEP_S = {8: 0.041, 16: 0.061, 32: 0.088}


def test_a_burst_is_not_cut_into_fewer_batches_than_the_replicas_can_share() -> None:
    # The benchmark's burst: at 32, the prompt spread cuts 3 batches, so one of 2 replicas
    # decodes two while the other idles; at 16, 4 batches in two rounds.
    rng = random.Random(0)
    pending = [Job(rng.randint(8, 256)) for _ in range(64)]
    assert len(plan(pending, 32)) == 3
    assert plan_width(pending, {16: CPU_STEP_S[16], 32: CPU_STEP_S[32]}, replicas=2) == 16
    assert plan_width(pending, CPU_STEP_S, replicas=2) != 32


def test_a_wider_batch_that_is_nearly_free_is_taken() -> None:
    # A GPU: a step of 128 items costs little more than one of 32.
    pending = [Job(100 + i % 50) for i in range(256)]
    assert plan_width(pending, {32: 0.020, 64: 0.021, 128: 0.023}, replicas=2) == 128


def test_of_two_plans_that_end_together_the_narrower_is_taken() -> None:
    pending = [Job(100) for _ in range(8)]
    assert plan_width(pending, {8: 0.05, 16: 0.05}, replicas=2) == 8
    # One batch of 8 per replica beats one of 16 on one replica, the other idle.
    assert plan_width([Job(100) for _ in range(16)], CPU_STEP_S, replicas=2) == 8


def test_a_cut_whose_last_batch_is_partial_counts_it_as_partial() -> None:
    # 24 jobs on one replica (timed on the EPYC cores, one core): 16 + 8 is one step of 16 and
    # one of 8, which ends before three of 8.
    one_core = {8: 8 / 142.9, 16: 16 / 182.1}
    pending = [Job(100) for _ in range(24)]
    assert plan_width(pending, one_core, replicas=1) == 16


def test_a_wider_batch_spanning_more_prompt_lengths_can_end_later() -> None:
    # Steps of 16 decode 1.15 times the tokens per second of 8, but each batch of 16 spans
    # twice the prompt lengths, fed a step at a time: two rounds of 8 end first.
    step_s = {8: 0.040, 16: 0.0696}
    pending = [Job(10 + 30 * i // 31, remaining_tokens=16) for i in range(32)]
    assert plan_width(pending, step_s, replicas=2) == 8
    # The same jobs with one prompt length: nothing to feed, and the wider steps win.
    assert plan_width([Job(10, remaining_tokens=16) for _ in range(32)], step_s, replicas=2) == 16


def test_a_batch_runs_its_longest_item_while_the_others_leave() -> None:
    # Ends at steps 4 (prompt 10, 4 tokens) and 6 (2 prompt tokens fed a step at a time, then
    # 4 tokens): 4 steps of two items, then 2 of one.
    step_s = {1: 0.01, 2: 0.02}
    assert batch_seconds([Job(10, remaining_tokens=4), Job(12, remaining_tokens=4)], step_s) == (
        pytest.approx(4 * 0.02 + 2 * 0.01)
    )


def test_a_replica_still_decoding_is_planned_as_busy() -> None:
    # Both replicas free: 16 and 8 side by side. One of them busy for as long as a batch of
    # 16 takes: the free one would decode 16 while the 8 waited; three batches of 8 share out.
    step_s = {8: 0.040, 16: 0.0696}
    pending = [Job(100, remaining_tokens=32) for _ in range(24)]
    assert plan_width(pending, step_s, replicas=2) == 16
    assert plan_width(pending, step_s, replicas=2, busy_s=[32 * step_s[16]]) == 8
    # Batches just ended (0 left) are no replicas of their own.
    assert plan_width(pending, step_s, replicas=2, busy_s=[0.0, 32 * step_s[16], 0.0]) == 8


def test_a_running_batch_has_left_what_its_items_have_not_come_to() -> None:
    step_s = {1: 0.01, 2: 0.02}
    # 4 tokens each at the start; the short one has come to one since (3 left), while the
    # long prompt had one of its 2 extra tokens fed.
    short, long = Job(10, remaining_tokens=3), Job(12, remaining_tokens=4)
    generated = [1, 0]
    assert seconds_left([short, long], generated, [True, True], step_s) == pytest.approx(
        3 * 0.02 + 2 * 0.01
    )
    # The short one stopped (a stop sequence): the long one alone, 1 prompt step and 4 tokens.
    assert seconds_left([short, long], generated, [False, True], step_s) == pytest.approx(5 * 0.01)


def test_a_batch_step_is_read_off_the_timed_steps() -> None:
    assert step_at(16, CPU_STEP_S) == CPU_STEP_S[16]
    assert CPU_STEP_S[16] < step_at(24, CPU_STEP_S) < CPU_STEP_S[32]
    assert 0 < step_at(4, CPU_STEP_S) < CPU_STEP_S[8]  # below the narrowest, by its slope
    assert step_at(3, {8: 0.04}) == 0.04  # one width timed: no slope to read
