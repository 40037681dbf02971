"""Per-request decode state: tokens in, text out, stop sequences, limits, log probs.

Pure Python over `tokenizers`; runs inside the engine callback, so nothing here may block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from headrace.core.contracts import CompletionOutput, CompletionRequest, JobStatus, TokenOutput
from headrace.core.errors import ModelLoadError
from worker.engine import SamplingParams, Step
from worker.halts import Halt
from worker.progress import Progress

# Below this a temperature samples like greedy decoding, its limit at 0; near float32's
# smallest (1e-40) CTranslate2 overflowed the scaled scores and ended items at once.
MIN_SAMPLING_TEMPERATURE = 1e-6


def sampling_params(
    request: CompletionRequest, vocabulary_size: int | None = None
) -> SamplingParams:
    """LLM Engine semantics: temperature 0 is greedy; top_k -1 or None means no top-k cut, and so
    does one at or above the vocabulary's size (CTranslate2 refuses it rather than keep all)."""
    if request.temperature < MIN_SAMPLING_TEMPERATURE:
        return SamplingParams(top_k=1, top_p=1.0, temperature=1.0)
    top_k = request.top_k if request.top_k and request.top_k > 0 else 0
    if vocabulary_size is not None and top_k >= vocabulary_size:
        top_k = 0
    return SamplingParams(top_k=top_k, top_p=request.top_p or 1.0, temperature=request.temperature)


class TextCodec:
    """A model's tokenizer, with the model's idea of its begin and end tokens."""

    def __init__(self, tokenizer: Tokenizer, *, bos_token: str | None, eos_token: str) -> None:
        self.tokenizer = tokenizer
        self.bos_token = bos_token
        self.eos_token = eos_token
        eos_id = tokenizer.token_to_id(eos_token)
        if eos_id is None:
            raise ModelLoadError(f"end token {eos_token!r} is not in the tokenizer's vocabulary")
        self.eos_id: int = eos_id
        self.vocabulary_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_file(cls, path: Path, *, bos_token: str | None, eos_token: str) -> TextCodec:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise ModelLoadError(f"cannot load tokenizer {path}: {e}") from e
        return cls(tokenizer, bos_token=bos_token, eos_token=eos_token)

    def token(self, token_id: int) -> str:
        token: str | None = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary")
        return token

    def prompt_tokens(self, prompt: str) -> list[str]:
        tokens: list[str] = self.tokenizer.encode(prompt, add_special_tokens=True).tokens
        # Start from the begin token when the tokenizer does not add one itself: it is how the
        # model saw documents start, and it keeps every prompt at least two tokens long, which
        # CTranslate2 needs to forward the prompt in one pass.
        if self.bos_token and (not tokens or tokens[0] != self.bos_token):
            tokens.insert(0, self.bos_token)
        return tokens


@dataclass
class ItemDecoder:
    """Turns one request's generated token ids into text, honouring its limits and stops.

    `text[:safe_len]` can be shown to a streaming client: the rest might still turn out to be
    the start of a stop sequence.
    """

    codec: TextCodec
    request: CompletionRequest
    num_prompt_tokens: int
    text: str = ""
    safe_len: int = 0
    token_ids: list[int] = field(default_factory=list)
    tokens: list[TokenOutput] = field(default_factory=list)
    finished: bool = False
    stopped_by_sequence: bool = False
    first_token_at: float | None = None  # wall clock, comparable with the submit time
    # safe_len after each generated token: the text each token made visible.
    visible_after: list[int] = field(default_factory=list)
    stopper: Halt | None = None  # why to stop early, if ever (worker/halts.py)
    halted: JobStatus | None = None  # stopped before its end: cancelled or timed out
    # What a stream may show, published as one tuple so the event loop reads a consistent view
    # while the engine's thread decodes: (visible text, tokens generated, finished).
    _published: tuple[str, int, bool] = field(default=("", 0, False), init=False)
    _stream: DecodeStream = field(init=False)
    _stops: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self._stream = DecodeStream(
            skip_special_tokens=self.request.skip_special_tokens is not False
        )
        self._stops = list(self.request.stop_sequences or [])

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids)

    def progress(self, since: int) -> Progress:
        """What a stream may show now, with the tokens from `since` on.

        Safe on the event loop while the engine's thread decodes: the published tuple is read
        at once, and the lists only grow, so their first `num_tokens` entries are final.
        """
        text, num_tokens, finished = self._published
        return Progress(
            text=text,
            num_tokens=num_tokens,
            finished=finished,
            num_prompt_tokens=self.num_prompt_tokens,
            since=since,
            token_ids=tuple(self.token_ids[since:num_tokens]),
            visible_after=tuple(self.visible_after[since:num_tokens]),
            tokens=tuple(self.tokens[since:num_tokens]),
            halted=self.halted if finished else None,
        )

    def on_step(self, step: Step) -> bool:
        """Feed one generated token; True means this item must stop now."""
        if self.finished:
            return True
        if step.token_id == self.codec.eos_id:
            self._finish()
            return True
        if self.first_token_at is None:
            self.first_token_at = time.time()
        stop = self._add(step.token_id, step.log_prob)
        if not stop and (step.is_last or self.num_completion_tokens >= self.request.max_new_tokens):
            self._finish()
            stop = True
        if not stop and self.halt_if_due():
            stop = True  # the token is kept: it was generated, and it ends the partial text
        self.visible_after.append(self.safe_len)
        self._published = (self.text[: self.safe_len], self.num_completion_tokens, self.finished)
        return stop

    def halt_if_due(self) -> bool:
        """Stop here, before the end, if the job's halt is due (a cancel, its deadline): what
        was generated is the result. True if it stopped."""
        if self.stopper is None or self.finished:
            return False
        reason = self.stopper.due()
        if reason is None:
            return False
        self.halted = reason  # before finishing: whoever sees it finished sees why
        self.stopper.stopped, self.stopper.stopped_at = reason, time.time()
        self._finish()
        return True

    def resume(self, token_ids: list[int], tokens: list[TokenOutput]) -> None:
        """Replay the tokens an earlier attempt generated (and streamed) before continuing."""
        for token_id in token_ids:
            self._add(token_id, None)
            self.visible_after.append(self.safe_len)
        if self.request.return_token_log_probs:
            self.tokens = list(tokens)
        if not self.finished and self.num_completion_tokens >= self.request.max_new_tokens:
            self._finish()  # nothing is left to generate: decoding on would pass the limit
        self._published = (self.text[: self.safe_len], self.num_completion_tokens, self.finished)

    def _add(self, token_id: int, log_prob: float | None) -> bool:
        self.token_ids.append(token_id)
        if self.request.return_token_log_probs:
            self.tokens.append(
                TokenOutput(
                    token=self.codec.tokenizer.decode([token_id], skip_special_tokens=False),
                    log_prob=log_prob if log_prob is not None else 0.0,
                )
            )
        previous_len = len(self.text)
        self.text += self._stream.step(self.codec.tokenizer, token_id) or ""
        if self._stops and self._cut_at_stop(previous_len):
            return True
        self.safe_len = len(self.text) - self._possible_stop_prefix()
        return False

    def _cut_at_stop(self, previous_len: int) -> bool:
        longest = max(len(s) for s in self._stops)
        scan_from = max(0, previous_len - longest + 1)
        hits = [
            (index, stop)
            for stop in self._stops
            if (index := self.text.find(stop, scan_from)) != -1
        ]
        if not hits:
            return False
        index, stop = min(hits)
        keep = index + (len(stop) if self.request.include_stop_str_in_output else 0)
        self.text = self.text[:keep]
        self.stopped_by_sequence = True
        self.finished = True
        self.safe_len = len(self.text)
        self._published = (self.text, self.num_completion_tokens, True)
        return True

    def _possible_stop_prefix(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _finish(self) -> None:
        # The stream holds back bytes of an unfinished character; the full decode shows them
        # (as U+FFFD), so the stored text is what decoding all tokens at once gives.
        full = self.codec.tokenizer.decode(
            self.token_ids, skip_special_tokens=self.request.skip_special_tokens is not False
        )
        if full.startswith(self.text):
            self.text = full
        self.finished = True
        self.safe_len = len(self.text)
        self._published = (self.text, self.num_completion_tokens, True)

    def finish(self) -> CompletionOutput:
        if not self.finished:
            self._finish()
        return CompletionOutput(
            text=self.text,
            num_prompt_tokens=self.num_prompt_tokens,
            num_completion_tokens=self.num_completion_tokens,
            tokens=self.tokens if self.request.return_token_log_probs else None,
        )
