"""A job's decoding as its stream sees it: immutable snapshots, and the watch that carries them.

The scheduler fills a `Watch` (the job's decoder as its source, a signal per token, started and
ended); the publisher follows it and reads only `Progress` snapshots, so it depends on neither
the scheduler nor the decoder.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from headrace.core.contracts import JobStatus, TokenOutput


@dataclass(frozen=True)
class Progress:
    """What a stream may show of a job's decoding at one moment.

    It carries the tokens from `since` on (what the stream has not shown yet), not all of them:
    a snapshot per flush of every token would cost a long job time quadratic in its length.
    """

    text: str  # all of it once finished; before that, what no stop sequence can still cut
    num_tokens: int  # generated so far, an earlier attempt's included
    finished: bool
    num_prompt_tokens: int
    since: int  # the index of the first token in the tuples below
    token_ids: tuple[int, ...]
    visible_after: tuple[int, ...]  # per token: len(text) once it was generated (not the last)
    tokens: tuple[TokenOutput, ...]  # per token with its log prob; empty unless asked for
    halted: JobStatus | None = None  # finished early: CANCELLED or TIMED_OUT (worker/halts.py)


class ProgressSource(Protocol):
    def progress(self, since: int) -> Progress: ...


class ProgressSignal:
    """Wakes a coroutine when a decoder made progress, at most once per wait.

    `notify` runs on a CTranslate2 thread once per token; it crosses into the event loop only
    when the waiter is armed, so a fast decode costs one loop wake-up per flush, not per token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._armed = True

    def notify(self) -> None:
        if self._armed:
            self._armed = False
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()
        # Re-armed before the waiter reads the progress, so no progress goes unnoticed.
        self._armed = True


@dataclass
class Watch:
    """Lets the caller of `complete` follow the job's decoding while it runs."""

    signal: ProgressSignal
    source: ProgressSource | None = None  # set before `started`
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # result or failure is set

    def progress(self, since: int) -> Progress:
        assert self.source is not None, "read before the job started"
        return self.source.progress(since)
