"""The lane policies, pure: what a worker owes the batch lane, and which jobs batch together."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import pytest

from worker.batching import MAX_PROMPT_SPREAD, MAX_WAIT_S, select_batch_in_lanes
from worker.job_queue import RECEIVE_LIMIT, JobQueue
from worker.lanes import BATCH_LOOK_SECONDS, BatchShare, LaneQueues


@dataclass(frozen=True)
class Job:
    name: str
    prompt_len: int = 10
    params: str = "greedy"
    held_since: float = 0.0
    remaining_tokens: int = 20

    @property
    def prompt(self) -> list[str]:
        return ["t"] * self.prompt_len


def test_nothing_is_owed_to_the_batch_lane_at_first() -> None:
    assert BatchShare(0.1).owed(10) == 0


def test_a_tenth_share_owes_one_batch_job_for_every_nine_interactive() -> None:
    share = BatchShare(0.1)
    share.took(interactive=8, batch=0, batch_asked=0)
    assert share.owed(10) == 0
    share.took(interactive=1, batch=0, batch_asked=0)
    assert share.owed(10) == 1
    share.took(interactive=0, batch=1, batch_asked=1)
    assert share.owed(10) == 0


def test_what_is_owed_never_exceeds_the_room() -> None:
    share = BatchShare(0.5)
    share.took(interactive=10, batch=0, batch_asked=0)
    assert share.owed(3) == 3


def test_an_empty_batch_lane_is_owed_nothing_later() -> None:
    # Credit earned while the batch queue was empty must not become a burst of batch work.
    share = BatchShare(0.5)
    share.took(interactive=10, batch=0, batch_asked=0)
    share.took(interactive=0, batch=2, batch_asked=10)
    assert share.owed(10) == 0


def test_share_zero_owes_nothing_and_a_full_share_is_refused() -> None:
    share = BatchShare(0.0)
    share.took(interactive=1000, batch=0, batch_asked=0)
    assert share.owed(10) == 0
    with pytest.raises(ValueError):
        BatchShare(1.0)


def test_interactive_jobs_go_first_and_batch_jobs_fill_the_room_oldest_first() -> None:
    interactive = [Job("i1", held_since=5.0)]
    batch_lane = [Job(f"b{i}", held_since=float(i)) for i in range(10)]
    chosen = select_batch_in_lanes(interactive, batch_lane, 4, now=6.0)
    assert {j.name for j in chosen} == {"i1", "b0", "b1", "b2"}


def test_batch_jobs_that_decode_differently_or_spread_too_far_do_not_join() -> None:
    interactive = [Job("i1", prompt_len=10)]
    batch_lane = [
        Job("sampled", params="t=0.7"),
        Job("long", prompt_len=10 + MAX_PROMPT_SPREAD + 1),
        Job("near", prompt_len=12),
    ]
    chosen = select_batch_in_lanes(interactive, batch_lane, 8, now=1.0)
    assert [j.name for j in chosen] == ["i1", "near"]


def test_without_interactive_work_the_batch_lane_is_planned_as_usual() -> None:
    batch_lane = [Job(f"b{i}") for i in range(3)]
    assert len(select_batch_in_lanes([], batch_lane, 8, now=1.0)) == 3


def test_a_batch_job_held_too_long_is_not_passed_over_for_interactive_work() -> None:
    interactive = [Job("i1", prompt_len=200, held_since=MAX_WAIT_S)]
    batch_lane = [Job("old", prompt_len=10, held_since=0.0)]
    chosen = select_batch_in_lanes(interactive, batch_lane, 8, now=MAX_WAIT_S + 0.1)
    assert [j.name for j in chosen] == ["old"]


class RecordingQueue:
    """A queue of `backlog` messages that records the long poll of every receive."""

    def __init__(self, name: str, backlog: int) -> None:
        self.queue_url = name
        self.backlog = backlog
        self.waits: list[int] = []

    async def receive(
        self, *, max_messages: int, wait_seconds: int, hide_seconds: int | None = None
    ) -> list[dict[str, Any]]:
        self.waits.append(wait_seconds)
        taken = min(max_messages, RECEIVE_LIMIT, self.backlog)
        self.backlog -= taken
        return [{"ReceiptHandle": f"{self.queue_url}-{self.backlog + i}"} for i in range(taken)]


def test_a_batch_backlog_is_received_without_long_polls_of_the_empty_interactive_queue() -> None:
    interactive, batch = RecordingQueue("interactive", 0), RecordingQueue("batch", 25)
    lanes = LaneQueues(cast(JobQueue, interactive), cast(JobQueue, batch), batch_share=0.1)

    async def drain() -> list[int]:
        sizes = []
        for _ in range(5):
            sizes.append(len(await lanes.receive(max_messages=40, wait_seconds=20)))
        return sizes

    sizes = asyncio.run(drain())

    assert sizes == [10, 10, 5, 0, 0]
    # The first look is a short long poll (nothing known yet); while the batch lane keeps
    # filling the room, none; once it ran dry, the idle worker long-polls again.
    assert interactive.waits == [BATCH_LOOK_SECONDS, 0, 0, BATCH_LOOK_SECONDS, BATCH_LOOK_SECONDS]


class TrickleQueue(RecordingQueue):
    """Gives one message a receive, as a queue does while its jobs arrive one by one."""

    async def receive(
        self, *, max_messages: int, wait_seconds: int, hide_seconds: int | None = None
    ) -> list[dict[str, Any]]:
        return await super().receive(max_messages=1, wait_seconds=wait_seconds)


def test_an_empty_batch_lane_is_looked_at_once_a_second_while_interactive_jobs_trickle_in() -> None:
    interactive, batch = TrickleQueue("interactive", 100), RecordingQueue("batch", 0)
    now = [0.0]
    lanes = LaneQueues(
        cast(JobQueue, interactive), cast(JobQueue, batch), batch_share=0.1, clock=lambda: now[0]
    )

    async def receive(times: int) -> list[dict[str, Any]]:
        taken = []
        for _ in range(times):
            taken += await lanes.receive(max_messages=8, wait_seconds=20)
        return taken

    assert len(asyncio.run(receive(5))) == 5
    assert len(batch.waits) == 1  # found empty once, then left alone
    batch.backlog = 3
    now[0] = BATCH_LOOK_SECONDS - 0.01
    assert [m["ReceiptHandle"] for m in asyncio.run(receive(1))] == ["interactive-94"]
    now[0] = BATCH_LOOK_SECONDS  # a second on, the batch work that came is taken
    taken = asyncio.run(receive(1))
    assert len(taken) == 4 and len(batch.waits) == 2
    # An idle worker (no interactive work came) always looks at the batch lane after its poll.
    interactive.backlog = 0
    batch.backlog = 0
    asyncio.run(receive(2))
    assert len(batch.waits) == 4
