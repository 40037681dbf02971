"""The soak's jobs: prompts from one word to a few hundred, small `max_new_tokens` (the dev
model is tiny), some greedy; and the door each job comes in by."""

from __future__ import annotations

import random
from typing import Any, Literal

from tests.suites.chaos.workload import GREEDY_PROMPTS, SAMPLED_PROMPTS

Door = Literal["http", "sync", "ws-complete", "ws-subscribe"]
PROMPT_WORDS = (1, 6, 40, 250)
# (weight, low, high): most jobs short, a few long enough to span several publisher flushes.
TOKEN_RANGES = ((4, 1, 8), (4, 9, 32), (2, 33, 96))


def _prompt(rng: random.Random, greedy: bool) -> str:
    words = " ".join(rng.choice(GREEDY_PROMPTS if greedy else SAMPLED_PROMPTS) for _ in range(60))
    return " ".join(words.split()[: rng.choice(PROMPT_WORDS)])


def _max_new_tokens(rng: random.Random) -> int:
    _, low, high = rng.choices(TOKEN_RANGES, weights=[w for w, _, _ in TOKEN_RANGES])[0]
    return rng.randint(low, high)


def job_body(rng: random.Random) -> dict[str, Any]:
    """One request's fields, without the model."""
    greedy = rng.random() < 0.35
    body: dict[str, Any] = {
        "prompt": _prompt(rng, greedy),
        "max_new_tokens": _max_new_tokens(rng),
        "temperature": 0 if greedy else round(rng.uniform(0.3, 1.0), 2),
    }
    extra = rng.random()
    if extra < 0.15:
        body["return_token_log_probs"] = True
    elif extra < 0.3:
        body["stop_sequences"] = [" the"]
    elif extra < 0.4 and not greedy:
        body["top_p"] = 0.9
    elif extra < 0.5 and not greedy:
        body["top_k"] = 40
    return body


def door_for(index: int, *, follow_every: int, sync_every: int) -> Door:
    """Every `follow_every`-th job is followed over WebSocket, alternately submitted there and
    submitted over HTTP then subscribed; every `sync_every`-th of the rest takes the sync route.
    0 turns either off."""
    if follow_every and index % follow_every == 0:
        return "ws-complete" if (index // follow_every) % 2 == 0 else "ws-subscribe"
    if sync_every and index % sync_every == sync_every - 1:
        return "sync"
    return "http"
