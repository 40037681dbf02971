"""Guided decoding on CTranslate2, which has no hook on the logits inside `generate_batch`.

guided_choice is exact scoring: each choice is scored after the prompt (`Engine.score`) and the
one whose tokens have the highest total log prob is the output. guided_regex, guided_json and
guided_grammar are decoded under llguidance's token mask, optimistically: the engine decodes
freely with the request's sampling while the callback checks each token against the matcher,
and stops at the first token the constraint refuses. That step's logits (the engine returns
them) are masked and a token is drawn from what is left, then decoding goes on from there. The
result is the constrained decoding itself: greedy, the best allowed token; sampled, a draw from
the allowed tokens (a refused draw is drawn again among them, which is rejection sampling).
Each engine call forwards the prompt and the tokens so far again: CTranslate2 can only keep a
prompt's state in a cache that never forgets one (`cache_static_prompt`), which would grow
with every distinct prompt. Tokens the constraint forces (a JSON key) take no model step,
unless log probs were asked for (only the model can give them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import llguidance
import numpy as np
import numpy.typing as npt

from headrace.core.contracts import CompletionRequest
from headrace.core.errors import HeadraceError
from headrace.core.guides import grammar_of, library_message
from worker.decoding import TextCodec
from worker.engine import SamplingParams, Step

# Most tokens one engine call may decode: it returns every step's logits (a vocabulary of
# floats each), so a model that keeps to the constraint still holds a bounded amount.
CHUNK_TOKENS = 64


class GuideRefused(HeadraceError):
    """The library cannot run the request's guide: no attempt could (invalid_request)."""

    status_code = 400


class GuideFailed(HeadraceError):
    """The matcher failed while decoding (not the request's fault as far as we can tell)."""


class GuidedEngine(Protocol):
    max_context_tokens: int

    def score(self, sequences: Sequence[Sequence[str]]) -> list[list[float]]: ...

    def generate_with_logits(
        self,
        prompt: Sequence[str],
        *,
        params: SamplingParams,
        max_new_tokens: int,
        on_step: Callable[[Step], bool],
    ) -> npt.NDArray[np.float32]: ...


class Guides:
    """A model's matchers: llguidance's view of its tokenizer is built once, on first use."""

    def __init__(self, codec: TextCodec) -> None:
        self.codec = codec
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()

    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(
                    self.codec.tokenizer.to_str(), eos_token=self.codec.eos_id
                )
            return self._tokenizer

    def matcher(self, request: CompletionRequest) -> llguidance.LLMatcher:
        """A fresh matcher for the request's regex, JSON Schema or grammar."""
        try:
            found = grammar_of(request)
        except ValueError as e:
            raise GuideRefused(f"guide: {library_message(str(e))}") from e
        if found is None:
            raise ValueError("the request has no grammar to match")
        field, grammar = found
        matcher = llguidance.LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GuideRefused(f"{field}: {library_message(matcher.get_error())}")
        return matcher


def choose(
    engine: GuidedEngine, codec: TextCodec, prompt: list[str], choices: Sequence[str]
) -> tuple[list[int], list[float]]:
    """The token ids of the choice whose tokens are likeliest after the prompt (the first of
    equals), with their log probs."""
    tokenized = [codec.tokenizer.encode(c, add_special_tokens=False).ids for c in choices]
    longest = max(len(ids) for ids in tokenized)
    if len(prompt) + longest > engine.max_context_tokens:
        raise GuideRefused(
            f"guided_choice: the prompt's {len(prompt)} tokens and a choice of {longest} make"
            f" more than the model's context of {engine.max_context_tokens}"
        )
    scores = engine.score([prompt + [codec.token(i) for i in ids] for ids in tokenized])
    chosen = [s[len(s) - len(ids) :] for s, ids in zip(scores, tokenized, strict=True)]
    best = max(range(len(choices)), key=lambda i: sum(chosen[i]))
    return tokenized[best], chosen[best]


def allowed_tokens(matcher: llguidance.LLMatcher, size: int) -> npt.NDArray[np.bool_]:
    """The matcher's mask over the first `size` token ids (the engine's logits may be wider
    than the tokenizer, or narrower)."""
    mask = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    bits = np.unpackbits(mask, bitorder="little")
    allowed = np.zeros(size, dtype=np.bool_)
    n = min(size, bits.size)
    allowed[:n] = bits[:n].astype(np.bool_)
    return allowed


def log_softmax(row: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    scores = row.astype(np.float64)
    shifted = scores - scores.max()
    result: npt.NDArray[np.float64] = shifted - np.log(np.exp(shifted).sum())
    return result


def pick(
    row: npt.NDArray[np.float32],
    allowed: npt.NDArray[np.bool_],
    params: SamplingParams,
    rng: np.random.Generator,
) -> int:
    """A token among the allowed ones, the way the engine samples (top-k, temperature, then
    top-p) over the model's own distribution, restricted to the allowed tokens; when none of
    that cut is allowed, drawn from the allowed tokens with the temperature alone."""
    if not allowed.any():
        raise GuideFailed("the constraint allows no token")
    scores = row.astype(np.float64)
    if params.top_k == 1:  # greedy
        return int(np.argmax(np.where(allowed, scores, -np.inf)))
    keep = np.ones(scores.size, dtype=np.bool_)
    if 0 < params.top_k < scores.size:
        keep[:] = False
        keep[np.argpartition(-scores, params.top_k - 1)[: params.top_k]] = True
    scaled = scores / params.temperature
    if params.top_p < 1.0:
        probs = np.exp(np.where(keep, scaled, -np.inf) - scaled[keep].max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        before = np.cumsum(probs[order]) - probs[order]
        cut = np.zeros(scores.size, dtype=np.bool_)
        cut[order[before < params.top_p]] = True
        keep &= cut
    candidates = keep & allowed
    if not candidates.any():
        candidates = allowed
    weights = np.exp(np.where(candidates, scaled, -np.inf) - scaled[candidates].max())
    return int(rng.choice(scores.size, p=weights / weights.sum()))


@dataclass
class MatchedDecode:
    """One request decoded under a matcher. `feed` hands each token on (the request's
    ItemDecoder, the stream) and answers True once the request must stop."""

    engine: GuidedEngine
    matcher: llguidance.LLMatcher
    eos_id: int
    token: Callable[[int], str]
    params: SamplingParams
    feed: Callable[[Step], bool]
    use_forced: bool  # forced tokens skip the model (they then carry no log prob)
    rng: np.random.Generator

    def run(self, context: list[str], remaining: int) -> None:
        """Decode after `context` (the prompt and any tokens resumed) until `feed` says stop,
        the constraint is complete, or `remaining` tokens are made."""
        made = 0
        while made < remaining:
            if self.use_forced:
                for token_id in self.matcher.compute_ff_tokens():
                    made += 1
                    context.append(self.token(token_id))
                    if self._take(token_id, None) or made >= remaining:
                        return
            if self.matcher.is_stopped():  # nothing may follow: the end
                self.feed(Step(0, self.eos_id, None, False))
                return
            step_made, stop = self._engine_call(context, remaining - made)
            made += step_made
            if stop:
                return

    def _engine_call(self, context: list[str], remaining: int) -> tuple[int, bool]:
        """Decode freely until the constraint refuses a token, then pick an allowed one from
        that step's logits. (tokens made, stop)."""
        taken: list[int] = []
        refused = False
        stop = False

        def on_step(step: Step) -> bool:
            nonlocal refused, stop
            if not self._allows(step.token_id):
                refused = True
                return True
            taken.append(step.token_id)
            stop = self._take(step.token_id, step.log_prob)
            return stop

        logits = self.engine.generate_with_logits(
            context,
            params=self.params,
            max_new_tokens=min(remaining, CHUNK_TOKENS),
            on_step=on_step,
        )
        context.extend(self.token(t) for t in taken if t != self.eos_id)
        if stop or not refused:
            return len(taken), stop
        row = logits[-1]
        token_id = pick(row, allowed_tokens(self.matcher, row.size), self.params, self.rng)
        context.append(self.token(token_id))
        return len(taken) + 1, self._take(token_id, float(log_softmax(row)[token_id]))

    def _allows(self, token_id: int) -> bool:
        if token_id == self.eos_id:
            return self.matcher.is_accepting()
        return self.matcher.validate_tokens([token_id]) == 1

    def _take(self, token_id: int, log_prob: float | None) -> bool:
        if not self.matcher.consume_token(token_id):
            raise GuideFailed(f"matcher: {library_message(self.matcher.get_error())}")
        return self.feed(Step(0, token_id, log_prob, False)) or token_id == self.eos_id
