"""What the scheduler holds (worker/scheduler.py): its jobs, and the batches they decode in."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from headrace.core.contracts import CompletionOutput, CompletionRequest
from worker.batching import seconds_left
from worker.decoding import ItemDecoder, sampling_params
from worker.engine import SamplingParams
from worker.progress import Watch


@dataclass(frozen=True)
class Decoded:
    output: CompletionOutput
    first_token_at: float | None


@dataclass
class HeldJob:
    """A job the scheduler holds, waiting for a batch or in one."""

    request_id: str
    request: CompletionRequest
    future: asyncio.Future[Decoded]
    prompt: list[str]  # what the engine is fed: prompt tokens, then any resumed tokens
    decoder: ItemDecoder
    held_since: float  # loop time it was handed over: bounds how long batching passes it over
    watch: Watch | None = None
    params: SamplingParams = field(init=False)

    def __post_init__(self) -> None:
        self.params = sampling_params(self.request, self.decoder.codec.vocabulary_size)

    @property
    def remaining_tokens(self) -> int:
        return max(1, self.request.max_new_tokens - self.decoder.num_completion_tokens)


@dataclass
class BatchRun:
    """A batch on a replica."""

    batch: list[HeldJob]
    started_at: float
    gives_way: bool  # a lone job started on an idle worker: yields to a burst while young
    tokens_at_start: list[int] = field(init=False)
    stopping: bool = False  # read by the engine's thread: every item stops at its next token

    def __post_init__(self) -> None:
        self.tokens_at_start = [p.decoder.num_completion_tokens for p in self.batch]

    def seconds_left(self, step_s: Mapping[int, float]) -> float:
        live = [not p.future.done() for p in self.batch]
        if self.stopping or not any(live):
            return 0.0
        generated = [
            p.decoder.num_completion_tokens - start
            for p, start in zip(self.batch, self.tokens_at_start, strict=True)
        ]
        return seconds_left(self.batch, generated, live, step_s)
