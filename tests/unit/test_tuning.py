"""The warm-up's choice of batch width (worker/tuning.py), on an engine whose step times are
given: a clock that only the fake engine's steps move."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker import tuning
from worker.decoding import TextCodec
from worker.engine import SamplingParams, Step


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class TimedEngine:
    """Decodes nothing: each step of a batch of `width` takes `step_s[width]` on the clock."""

    clock: Clock
    step_s: dict[int, float]
    inter_threads: int = 1
    max_context_tokens: int = 1024
    widths: list[int] = field(default_factory=list)
    prefixes: list[int] = field(default_factory=list)  # shared-prefix length of every batch

    def generate(
        self,
        prompts: Sequence[Sequence[str]],
        *,
        params: SamplingParams,
        max_new_tokens: int,
        return_log_probs: bool,
        on_step: Callable[[Step], bool],
        min_new_tokens: int = 0,
        shared_prefix: Sequence[str] = (),
    ) -> None:
        width = len(prompts)
        self.widths.append(width)
        self.prefixes.append(len(shared_prefix))
        for _ in range(max_new_tokens):
            self.clock.now += self.step_s[width]
            for index in range(width):
                on_step(Step(index=index, token_id=1, log_prob=None, is_last=False))


@pytest.fixture
def codec(dev_model_dir: Path) -> TextCodec:
    config = json.loads((dev_model_dir / "config.json").read_text())
    return TextCodec.from_file(
        dev_model_dir / "tokenizer.json",
        bos_token=config.get("bos_token"),
        eos_token=config.get("eos_token") or "</s>",
    )


def choose(
    step_s: dict[int, float], codec: TextCodec, max_context_tokens: int = 1024
) -> tuple[int, TimedEngine]:
    clock = Clock()
    engine = TimedEngine(clock, step_s, max_context_tokens=max_context_tokens)
    width, _ = tuning.choose_batch_width(
        engine,  # type: ignore[arg-type]
        codec,
        (8, 16, 32),
        clock=clock,
    )
    return width, engine


def test_the_width_doubles_while_doubling_pays_and_stops_where_it_does_not(
    codec: TextCodec, caplog: pytest.LogCaptureFixture
) -> None:
    # Twice the tokens per second from 8 to 16; none more from 16 to 32.
    caplog.set_level(logging.INFO, logger="headrace.tuning")
    width, engine = choose({8: 0.02, 16: 0.02, 32: 0.04}, codec)
    assert width == 16
    assert 32 in engine.widths[1:]  # tried, and not taken
    (record,) = [r for r in caplog.records if r.getMessage() == "batch width chosen"]
    assert record.max_batch_size == 16  # type: ignore[attr-defined]
    assert set(record.trials) == {8, 16, 32}  # type: ignore[attr-defined]


def test_a_width_that_keeps_paying_is_taken_to_the_last_candidate(codec: TextCodec) -> None:
    width, _ = choose({8: 0.02, 16: 0.022, 32: 0.025}, codec)
    assert width == 32


def test_the_first_width_stays_when_the_wider_gains_too_little(codec: TextCodec) -> None:
    # 5% more tokens per second: within the trials' scatter, and the wider batch's other
    # costs are still to come.
    width, engine = choose({8: 0.02, 16: 0.038, 32: 0.05}, codec)
    assert width == 8
    assert 32 not in engine.widths[1:]  # no wider trial once one did not pay


def test_a_toy_model_is_not_tuned_past_the_first_width(codec: TextCodec) -> None:
    width, engine = choose({8: 0.0002, 16: 0.0002, 32: 0.0002}, codec)
    assert width == 8
    assert engine.widths[1:] == [8]  # after the untimed first batch: one trial


def test_a_slow_model_stops_the_search_within_the_budget(codec: TextCodec) -> None:
    # Each trial of 8 takes longer than the budget: no wider one is tried.
    slow = tuning.TUNING_BUDGET_S
    width, engine = choose({8: slow, 16: slow, 32: slow}, codec)
    assert width == 8
    assert engine.widths[1:] == [8]


def test_every_trial_decodes_after_a_context_of_real_length(codec: TextCodec) -> None:
    # A step's cost per item grows with the context, faster at wider batches: a trial on a
    # bare short prompt would favour widths that real prompts do not.
    _, engine = choose({8: 0.02, 16: 0.022, 32: 0.025}, codec)
    assert engine.prefixes == [tuning.TRIAL_CONTEXT_TOKENS] * len(engine.prefixes)


def test_the_trial_context_stays_within_a_short_model_context(codec: TextCodec) -> None:
    _, engine = choose({8: 0.02, 16: 0.022, 32: 0.025}, codec, max_context_tokens=64)
    assert set(engine.prefixes) == {32}


def test_a_wider_width_is_timed_in_turns_with_the_narrower(codec: TextCodec) -> None:
    # A slow spell of a shared machine then falls on both widths, not on one.
    _, engine = choose({8: 0.02, 16: 0.03, 32: 0.06}, codec)
    untimed, *timed = engine.widths
    assert timed == [8, 16, 8, 16, 32, 16, 32]
    # The untimed first batch is the widest, so no timed try pays for growing the buffers.
    assert untimed == 32
