"""A followed stream's events carry `interval_tokens` new tokens each: the first and the last
go at once, and tokens that come slowly are shown within a second. The decoder is played by
the test (token by token, at the pace it sets); the publisher, its event cutting and its
clock are the worker's."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from headrace.core.tables.streams import Subscription
from worker.progress import Progress, ProgressSignal, Watch
from worker.publisher import StreamPublisher, _Follower
from worker.stream_settings import StreamLoad, StreamSettings


class Decoding:
    """The progress of a job whose tokens are all "ab"."""

    def __init__(self) -> None:
        self.tokens = 0
        self.finished = False

    def progress(self, since: int) -> Progress:
        return Progress(
            text="ab" * self.tokens,
            num_tokens=self.tokens,
            finished=self.finished,
            num_prompt_tokens=3,
            since=since,
            token_ids=tuple(range(since, self.tokens)),
            visible_after=tuple(2 * (i + 1) for i in range(since, self.tokens)),
            tokens=(),
        )


class Fence:
    epoch = 1

    async def store(self, items: list[Any], writer: Any, updates: list[Any]) -> bool:
        return True

    async def commit(self, items: list[Any]) -> None:
        pass


class Writer:
    async def put(self, items: list[Any]) -> None:
        pass


async def followed_stream(
    interval_tokens: int,
    pauses: list[float],
    *,
    followers: int = 1,
    load: StreamLoad | None = None,
) -> list[tuple[float, dict[str, Any]]]:
    """(seconds since the first token, event) for each event posted to the first follower,
    while the decoder makes a token after each of `pauses` (seconds)."""
    posted: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()

    async def post(endpoint: str, connection_id: str, data: bytes) -> bool:
        if connection_id == "c0":
            posted.append((time.monotonic() - started, json.loads(data)))
        return True

    settings = StreamSettings(
        table="t", flush_interval=0.01, interval_tokens=interval_tokens, load=load or StreamLoad()
    )
    publisher = StreamPublisher(
        request_id="r",
        attacher="w",
        settings=settings,
        aws=None,  # type: ignore[arg-type]
        dynamodb=None,
        post=post,
        writer=Writer(),  # type: ignore[arg-type]
        fence=Fence(),  # type: ignore[arg-type]
    )
    for n in range(followers):
        subscription = Subscription("r", f"c{n}", "https://example.invalid", 0, "w")
        publisher._followers[f"c{n}"] = _Follower(subscription, 0, time.monotonic())
    decoding = Decoding()
    watch = Watch(ProgressSignal(asyncio.get_running_loop()), source=decoding)
    following = asyncio.create_task(publisher.follow(watch))
    watch.started.set()
    for pause in pauses:
        decoding.tokens += 1
        watch.signal.notify()
        await asyncio.sleep(pause)
    decoding.finished = True
    watch.ended.set()
    watch.signal.notify()
    await asyncio.wait_for(following, 5)
    await publisher.store_last_flush()  # as the job's final write does when it cannot carry it
    return posted


def counts(posted: list[tuple[float, dict[str, Any]]]) -> list[int]:
    return [event["output"]["num_completion_tokens"] for _, event in posted]


def test_events_carry_the_interval_of_tokens_the_first_and_last_at_once() -> None:
    posted = asyncio.run(followed_stream(4, [0.01] * 30))
    assert "".join(e["output"]["text"] for _, e in posted) == "ab" * 30
    assert [e["seq"] for _, e in posted] == list(range(len(posted)))
    seen = counts(posted)
    assert seen[0] <= 2 and posted[0][0] < 0.05  # the first token at once
    steps = [b - a for a, b in itertools.pairwise(seen[:-1])]
    assert steps and min(steps) >= 4, seen
    assert posted[-1][1]["output"]["finished"] is True and seen[-1] == 30


def test_with_an_interval_of_one_token_events_follow_the_flush_clock() -> None:
    """The same decoding, every flush shows what came: events of fewer tokens (so the test
    above tells the setting's effect from the pace of this decoder)."""
    seen = counts(asyncio.run(followed_stream(1, [0.01] * 30)))
    steps = [b - a for a, b in itertools.pairwise(seen[:-1])]
    assert min(steps) < 4, seen


def test_tokens_that_come_slowly_are_shown_within_a_second() -> None:
    # Two tokens, then a long step: the second is not held for the next two.
    posted = asyncio.run(followed_stream(4, [0.003, 1.6, 0.003]))
    shown = [(round(at, 1), n) for (at, _), n in zip(posted, counts(posted), strict=True)]
    assert shown[0][1] == 1
    second = next(at for at, n in shown if n >= 2)
    assert 0.9 <= second <= 1.4, shown


def test_the_post_budget_counts_every_follower() -> None:
    """A flush posts to each follower, so the worker's post budget spaces the flushes of a
    stream with four followers four times as far apart as those of a stream with one."""
    loads = {n: StreamLoad(posts_per_second=40) for n in (1, 4)}
    seen = {
        n: counts(asyncio.run(followed_stream(1, [0.01] * 40, followers=n, load=load)))
        for n, load in loads.items()
    }
    assert all(load.followers == 0 for load in loads.values())  # uncounted once it ended
    # 25 ms between flushes for one follower, 100 ms for four, over about 0.4 s of tokens.
    assert len(seen[4]) * 2 <= len(seen[1]), seen
    assert seen[4][-1] == seen[1][-1] == 40
