"""Which held jobs decode together: the batch policy, pure so it is tested on its own.

CTranslate2 forwards the prompts of a batch in one pass only up to the shortest prompt; the
rest is fed one decoding step at a time, so one long prompt among short ones costs the whole
batch hundreds of steps. And nothing can join a batch once it runs. So the scheduler plans
all the jobs it holds, and starts one batch of the plan each time a replica is free:

- plan: the jobs with the same sampling options, sorted by prompt length and cut from the
  longest down into batches of at most `max_batch_size` spanning at most MAX_PROMPT_SPREAD
  prompt tokens. Cutting from one end makes the fewest batches; cutting from the long end
  leaves the odd small batch among the shortest prompts, where it costs least;
- start the batch with the most work (prompt and new tokens), so the longest batches run first
  and the last ones, when replicas fall idle one by one, are short (longest processing time
  first);
- but once a job has been held for MAX_WAIT_S, the batch with the longest-held job, so none
  waits for ever behind jobs that batch better. (Counting how often a job was passed over
  instead made a burst run its batches in arrival order: with two replicas most of a burst is
  passed over twice before it can start.)

The width: the warm-up times a few (worker/tuning.py) and allows up to the widest whose steps
paid. A wider batch makes each step do more, but it also spans more prompt lengths (fed a step
at a time), runs as long as its longest item while the others leave one by one, and makes fewer
batches to share out between replicas: a burst cut into fewer batches than replicas-times-rounds
leaves a replica idle at its end (64 jobs in batches of 32 and a prompt spread made 3 batches
for 2 replicas: one decoded twice while the other idled). So `plan_width` takes, of the timed
widths, the one whose plan of what is held ends first: each batch timed step by step, every
step at the timed cost of the items still in it (`batch_seconds`), the most work first onto
the replica free first. A step's gain alone overstates a wider width: counting each batch as
one step of its width, the planner could not see what the tails and spreads cost.

Interactive jobs go first (`select_batch_in_lanes`): a batch is planned from them alone, and
its spare room filled with batch-lane jobs that decode alike, oldest first. A batch-lane job
held for MAX_WAIT_S competes with the rest as above, so a held batch job is never starved.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol, TypeVar

# On 2 CPU cores a burst of 64 jobs planned longest first starts its last batch about 15 s
# after the first; past twice that, age goes first.
MAX_WAIT_S = 30.0
# Most prompt tokens a batch may span. The benchmark's 64 jobs (prompts of 14-253 tokens)
# sorted by length and cut in four batches of 16 span 40-71 tokens each; that cut, longest
# prompts first, took 30-32 s on 2 CPU cores, against 32-33 s for a cut within 64 tokens
# (five batches) and 33-36 s for the same four batches in another order. A batch of 4
# spanning 200 took longer than a batch of 16 spanning 56.
MAX_PROMPT_SPREAD = 96


class Batchable(Protocol):
    @property
    def prompt(self) -> Sequence[str]: ...
    @property
    def params(self) -> Hashable: ...
    @property
    def held_since(self) -> float: ...  # when the scheduler got it (monotonic seconds)
    @property
    def remaining_tokens(self) -> int: ...


J = TypeVar("J", bound=Batchable)


def plan(pending: Sequence[J], max_batch_size: int) -> list[list[J]]:
    """Every held job in exactly one batch, each batch sorted by prompt length."""
    groups: dict[Hashable, list[J]] = {}
    for job in pending:
        groups.setdefault(job.params, []).append(job)
    batches: list[list[J]] = []
    for group in groups.values():
        alike = sorted(group, key=lambda p: len(p.prompt), reverse=True)
        while alike:
            longest = len(alike[0].prompt)
            size = 1
            while (
                size < min(max_batch_size, len(alike))
                and longest - len(alike[size].prompt) <= MAX_PROMPT_SPREAD
            ):
                size += 1
            batches.append(alike[:size][::-1])
            alike = alike[size:]
    return batches


def plan_width(
    pending: Sequence[Batchable],
    step_s: Mapping[int, float],
    replicas: int,
    busy_s: Sequence[float] = (),
) -> int:
    """Of the timed widths (`step_s`: one replica's decoding step at each, in seconds, all
    replicas decoding), the one whose plan of `pending` ends first (see the module doc); the
    narrower of two that end together. `busy_s`: what the batches decoding now have left; the
    plan is made for a free replica, so the longest `replicas - 1` of them count (a batch just
    ended, not yet forgotten, counts as 0)."""
    busy = sorted(busy_s, reverse=True)[: replicas - 1]

    def makespan(width: int) -> tuple[float, int]:
        # The most work first onto the replica free first, as the scheduler starts them.
        loads = [*busy, *[0.0] * (replicas - len(busy))]
        for batch in sorted(plan(pending, width), key=work, reverse=True):
            loads[loads.index(min(loads))] += batch_seconds(batch, step_s)
        return max(loads), width

    return min(step_s, key=makespan)


def batch_seconds(batch: Sequence[Batchable], step_s: Mapping[int, float]) -> float:
    """How long `batch` decodes: CTranslate2 forwards the prompts in one pass up to the shortest
    and feeds each the rest of its own a step at a time, an item leaves at its last token
    (its token limit: a stop or the end token may come sooner, which no plan knows), and each
    step costs what a step of the items still in the batch does. The one pass is left out."""
    shortest = min(len(p.prompt) for p in batch)
    return _seconds([len(p.prompt) - shortest + p.remaining_tokens for p in batch], step_s)


def seconds_left(
    batch: Sequence[Batchable],
    generated: Sequence[int],
    live: Sequence[bool],
    step_s: Mapping[int, float],
) -> float:
    """What a running batch has left, counted as `batch_seconds` counts it: `generated`, the
    tokens each item has come to since the batch started, tells how far it is (an item with
    none may still be fed its prompt), and an item no longer `live` has left it."""
    shortest = min(len(p.prompt) for p in batch)
    leads = [len(p.prompt) - shortest for p in batch]
    step = max((g + lead for g, lead in zip(generated, leads, strict=True) if g), default=0)
    ends = [
        p.remaining_tokens + max(0, lead - step)
        for p, lead, alive in zip(batch, leads, live, strict=True)
        if alive
    ]
    return _seconds(ends, step_s)


def _seconds(ends: Sequence[int], step_s: Mapping[int, float]) -> float:
    """Items leaving after `ends` steps, each step at the cost of the items still in."""
    seconds, step = 0.0, 0
    for leaving, end in enumerate(sorted(ends)):
        seconds += (end - step) * step_at(len(ends) - leaving, step_s)
        step = end
    return seconds


def step_at(size: int, step_s: Mapping[int, float]) -> float:
    """One step of a batch of `size`: the timed step of the nearest wider width, less what the
    items it lacks cost (the slope between the two nearest timed widths); a partial batch, the
    last of a cut, is cheaper than a full one."""
    widths = sorted(step_s)
    wider = next((w for w in widths if w >= size), widths[-1])
    if len(widths) == 1:
        return step_s[wider]
    below = [w for w in widths if w < wider]
    lower, upper = (below[-1], wider) if below else (widths[0], widths[1])
    per_item = max(0.0, (step_s[upper] - step_s[lower]) / (upper - lower))
    return max(step_s[wider] - per_item * (wider - size), 0.0)


def work(batch: Sequence[Batchable]) -> int:
    return sum(len(p.prompt) + p.remaining_tokens for p in batch)


def select_batch(pending: Sequence[J], max_batch_size: int, now: float) -> list[J]:
    """The batch of the plan to start now (see the module doc)."""
    batches = plan(pending, max_batch_size)
    if not batches:
        return []
    oldest = min(pending, key=lambda p: p.held_since)
    if now - oldest.held_since >= MAX_WAIT_S:
        return next(b for b in batches if oldest in b)
    return max(batches, key=work)


def select_batch_in_lanes(
    interactive: Sequence[J], batch_lane: Sequence[J], max_batch_size: int, now: float
) -> list[J]:
    """The batch to start now when some jobs are interactive (see the module doc)."""
    overdue = any(now - j.held_since >= MAX_WAIT_S for j in batch_lane)
    if not interactive or overdue:
        return select_batch([*interactive, *batch_lane], max_batch_size, now)
    chosen = select_batch(interactive, max_batch_size, now)
    shortest = min(len(j.prompt) for j in chosen)
    longest = max(len(j.prompt) for j in chosen)
    for job in sorted(batch_lane, key=lambda j: j.held_since):
        if len(chosen) >= max_batch_size:
            break
        low, high = min(shortest, len(job.prompt)), max(longest, len(job.prompt))
        if job.params == chosen[0].params and high - low <= MAX_PROMPT_SPREAD:
            chosen.append(job)
            shortest, longest = low, high
    return sorted(chosen, key=lambda j: len(j.prompt))
