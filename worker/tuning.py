"""The batch width this worker uses, found on the model and device it has: timed at warm-up.

What width pays depends on the machine: per token, a wider batch reads the weights fewer times,
so it gains as long as the decoder is short of memory bandwidth rather than of arithmetic, and
where that ends differs between CPUs (batches of 8 beat 16 on one 2-core machine, 16 beat 8 on
another) and between a CPU and a GPU, and it shrinks as the context the batch attends to grows.
So at warm-up every replica decodes the same small batch at once, a few steps after a shared
prefix of a real prompt's length, for each candidate width, smallest first, each width's tries
alternating with the narrower one's, and the width is doubled while doubling still buys
`MIN_GAIN` more tokens per second. The trial times decoding steps only, from each replica's
first token to its last, so it costs a few steps per try. What else a wider batch costs (it
mixes more prompt and output lengths: CTranslate2 forwards only the shortest prompt in one
pass, and a batch runs as long as its longest item) the trial does not see; the scheduler's
planner does: it cuts each batch at the timed width, up to the chosen one, whose plan of what
is held ends first, counting those costs with the timed steps (worker/batching.py
`plan_width`). A bar on the step's gain alone, high enough to stand for them, kept batches of
8 on 2 EPYC cores where the engine decoded the benchmark's burst faster in batches of 16.

An explicit HEADRACE_MAX_BATCH_SIZE skips all this.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from worker.decoding import TextCodec
from worker.engine import Engine, SamplingParams, Step

logger = logging.getLogger("headrace.tuning")

# From the width measured best on the reference machines (engine.default_batching) up: below
# it, batches of 4 were clearly worse on both CPUs. Not 32 on a CPU: its trial steps gain over
# 16 at the trial's context, but the engine decoded the benchmark's burst slower in batches of
# 32 than of 16 or 8 on 2 EPYC cores (per item, a wide step's cost grows faster with the
# context than a narrow one's, which neither the trial nor the planner sees).
CPU_WIDTHS = (8, 16)
CUDA_WIDTHS = (32, 64, 128)
# A doubled width is timed further, and offered to the planner, only while its steps decode
# this many times the tokens per second: past the trials' scatter. Whether it pays for the
# jobs held is the planner's call (worker/batching.py `plan_width`).
MIN_GAIN = 1.1
TRIAL_PROMPT_TOKENS = 4  # the prompt pass is not what is timed: keep it short
# Tokens every trial item has seen before the timed steps. A step's cost per item grows with
# the context it attends to, and faster at wider batches, so a trial on a bare 4-token prompt
# favours widths that real prompts do not: a wide batch's step cost per item, measured on a
# bare prompt, looked far below a narrow one's but was about the same at real context. The
# prefix is forwarded once per replica and its state reused (CTranslate2's cached static
# prompt), so the trials stay cheap.
TRIAL_CONTEXT_TOKENS = 128
TRIAL_STEPS = 8  # tokens per item; the time from each replica's first token to its last counts
TRIAL_REPEATS = 2  # tries of each width; the fastest counts: noise only ever slows a trial
# No wider width is tried once the trials have taken this long: a model this slow gains the
# least from a wider batch (its steps are long already), and the worker's start stays short.
TUNING_BUDGET_S = 4.0
# A step shorter than this at the first width is not worth widening (a toy model, the tests'):
# the worker's own work per step weighs more than the decoder's, and the trials time noise.
MIN_STEP_S = 0.001


@dataclass(frozen=True)
class Trial:
    width: int
    tokens_per_s: float
    replicas: int

    @property
    def step_s(self) -> float:
        """One decoding step of one replica."""
        return self.replicas * self.width / self.tokens_per_s


def candidate_widths(device: str) -> tuple[int, ...]:
    return CUDA_WIDTHS if device == "cuda" else CPU_WIDTHS


def choose_batch_width(
    engine: Engine,
    codec: TextCodec,
    widths: Sequence[int],
    *,
    model: str = "",
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, list[Trial]]:
    """The chosen width and the trials that chose it (logged)."""
    started = clock()
    prefix, prompt = _trial_prompt(codec, engine.max_context_tokens)
    # Untimed, at the widest width: the prefix, and the engine's buffers grown to the widest
    # batch, which the first try of a wider width would otherwise pay for (the first trials
    # of a fresh process gained less from 16 than later ones did).
    _decode(engine, prefix, prompt, widths[-1], clock)
    tries: dict[int, list[float]] = {}

    def timed(width: int) -> Trial:
        tries.setdefault(width, []).append(_decode(engine, prefix, prompt, width, clock))
        return Trial(width, max(tries[width]), engine.inter_threads)

    trials = {widths[0]: timed(widths[0])}
    chosen = widths[0]
    for narrower, width in itertools.pairwise(widths):
        if clock() - started > TUNING_BUDGET_S or trials[narrower].step_s < MIN_STEP_S:
            break
        # The width's tries alternate with the narrower one's: a slow spell of a shared
        # machine then slows both, not the one that happened to run in it.
        for repeat in range(TRIAL_REPEATS):
            if repeat:
                trials[narrower] = timed(narrower)
            trials[width] = timed(width)
        if trials[width].tokens_per_s < MIN_GAIN * trials[narrower].tokens_per_s:
            break
        chosen = width
    logger.info(
        "batch width chosen",
        extra={
            "model": model,
            "max_batch_size": chosen,
            "trials": {t.width: round(t.tokens_per_s, 1) for t in trials.values()},
            "replicas": engine.inter_threads,
            "tuning_s": round(clock() - started, 2),
        },
    )
    return chosen, list(trials.values())


def _trial_prompt(codec: TextCodec, max_context: int) -> tuple[list[str], list[str]]:
    """The shared prefix and the prompt of every trial item: ordinary tokens (the end token
    would stop nothing: the trial decodes a fixed number of steps), within the model's context."""
    tokens = codec.prompt_tokens("the worker times a batch of this prompt " * 40)
    context = min(TRIAL_CONTEXT_TOKENS, max_context // 2, len(tokens) - TRIAL_PROMPT_TOKENS)
    return tokens[:context], tokens[context : context + TRIAL_PROMPT_TOKENS]


def _decode(
    engine: Engine, prefix: list[str], prompt: list[str], width: int, clock: Callable[[], float]
) -> float:
    """Tokens per second of all replicas decoding `width` copies of the prompt each, at once
    (as under load, when they share the memory bandwidth), from each replica's first token to
    its last: the decoding steps, not the prompt pass."""

    def one() -> float:
        stamps: list[float] = []

        def on_step(step: Step) -> bool:
            if step.index == 0:
                stamps.append(clock())
            return False

        engine.generate(
            [prompt] * width,
            params=SamplingParams(top_k=1),
            max_new_tokens=TRIAL_STEPS,
            min_new_tokens=TRIAL_STEPS,
            return_log_probs=False,
            on_step=on_step,
            shared_prefix=prefix,
        )
        return width * (len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9)

    replicas = engine.inter_threads
    with ThreadPoolExecutor(replicas) as pool:
        return sum(f.result() for f in [pool.submit(one) for _ in range(replicas)])
