"""The jobs a chaos run submits, and what greedy ones must give (CTranslate2 called directly)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ctranslate2
from tokenizers import Tokenizer

# Greedy prompts: plain words, and multi-byte text so split characters would show.
GREEDY_PROMPTS = (
    "The river",
    "Workers take jobs from the queue",
    "日本語 🚀",
    "The mill",
    "Water under the wheel",
)
SAMPLED_PROMPTS = ("The wheel", "A miller", "🌊 ✨ 中文", "Night falls on the race", "Stones")
# Short jobs finish between faults; long ones (seconds each) are still decoding when one lands.
SHORT_RANGE = (8, 64)
MEDIUM_TOKENS = 200
LONG_TOKENS = 800

Door = Literal["http", "ws-complete", "ws-subscribe"]


@dataclass(frozen=True)
class JobSpec:
    index: int
    body: dict[str, Any]  # the request fields, without the model
    door: Door

    @property
    def greedy(self) -> bool:
        return self.body.get("temperature") == 0

    @property
    def greedy_key(self) -> tuple[str, int]:
        return str(self.body["prompt"]), int(self.body["max_new_tokens"])


def _length(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(*SHORT_RANGE)
    return MEDIUM_TOKENS if roll < 0.85 else LONG_TOKENS


def _body(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.4:
        prompt = rng.choice(GREEDY_PROMPTS)
        return {"prompt": prompt, "max_new_tokens": _length(rng), "temperature": 0}
    body: dict[str, Any] = {
        "prompt": rng.choice(SAMPLED_PROMPTS),
        "max_new_tokens": _length(rng),
        "temperature": round(rng.uniform(0.3, 1.0), 2),
    }
    extra = rng.random()
    if extra < 0.2:
        body["top_p"] = 0.9
    elif extra < 0.4:
        body["top_k"] = 40
    elif extra < 0.5:
        body["return_token_log_probs"] = True  # one event per token
    return body


def build_workload(jobs: int, *, follow_every: int, seed: int) -> list[JobSpec]:
    """`jobs` specs; every `follow_every`-th is followed over WebSocket, alternately submitted
    there (`complete`) and over HTTP then `subscribe`d. 0 follows none."""
    rng = random.Random(seed)
    specs = []
    followed = 0
    for index in range(jobs):
        door: Door = "http"
        if follow_every and index % follow_every == 0:
            door = "ws-complete" if followed % 2 == 0 else "ws-subscribe"
            followed += 1
        specs.append(JobSpec(index=index, body=_body(rng), door=door))
    return specs


@dataclass(frozen=True)
class Expected:
    text: str
    num_prompt_tokens: int
    num_completion_tokens: int


def greedy_expectations(
    model_dir: Path, keys: set[tuple[str, int]]
) -> dict[tuple[str, int], Expected]:
    """What the engine itself gives for each (prompt, max_new_tokens), one request at a time,
    the way tests/e2e/test_completions_e2e.py compares."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    end_id = tokenizer.token_to_id("<|endoftext|>")
    # One thread: on a busy machine more spin against each other (measured 1 s vs 24 s for
    # 800 tokens with two threads while the tests ran).
    generator = ctranslate2.Generator(str(model_dir), device="cpu", intra_threads=1)
    expected = {}
    try:
        for prompt, max_new_tokens in sorted(keys):
            start = ["<|endoftext|>", *tokenizer.encode(prompt).tokens]
            result = generator.generate_batch(
                [start], max_length=max_new_tokens, sampling_topk=1, include_prompt_in_result=False
            )[0]
            ids = [i for i in result.sequences_ids[0] if i != end_id]
            expected[prompt, max_new_tokens] = Expected(tokenizer.decode(ids), len(start), len(ids))
    finally:
        del generator  # before interpreter exit (DESIGN.md: avoids an abort at shutdown)
    return expected
