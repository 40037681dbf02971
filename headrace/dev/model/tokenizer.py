"""Byte-level BPE tokenizer for the dev models, trained on the bundled corpus.

Training is deterministic: the `tokenizers` BPE trainer breaks frequency ties by pair
order, so the same corpus and vocabulary size give the same ``tokenizer.json`` bytes
(verified across processes and with ``RAYON_NUM_THREADS=1`` vs. the default pool).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"
EOS_ID = 0

# Syllables for the filler tokens that pad a vocabulary up to a requested size: they
# decode to pronounceable pseudo-words (" kalo", " mire") instead of control bytes.
_ONSETS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def corpus_paragraphs() -> list[str]:
    """The bundled training corpus, one paragraph per non-empty line."""
    text = resources.files("headrace.dev.model").joinpath("corpus.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def train_tokenizer(vocab_size: int, paragraphs: list[str] | None = None) -> Tokenizer:
    """Train a GPT-2 style byte-level BPE; ``<|endoftext|>`` gets id 0.

    The trainer stops early when the corpus has no pairs left to merge, so the result
    may be smaller than ``vocab_size`` (about 2050 tokens for the bundled corpus).
    The tokenizer adds no special tokens when encoding (no post-processor).
    """
    if vocab_size < 257:
        raise ValueError("vocab_size must be at least 257 (256 bytes + <|endoftext|>)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(paragraphs or corpus_paragraphs(), trainer=trainer)
    if tokenizer.token_to_id(EOS_TOKEN) != EOS_ID:
        raise RuntimeError(f"{EOS_TOKEN} did not get id {EOS_ID}")
    return tokenizer


def _filler_word(index: int) -> str:
    syllables = len(_ONSETS) * len(_VOWELS)
    parts: list[str] = []
    while True:
        index, rem = divmod(index, syllables)
        parts.append(_ONSETS[rem // len(_VOWELS)] + _VOWELS[rem % len(_VOWELS)])
        if index == 0:
            break
        index -= 1
    return "Ġ" + "".join(parts)  # "Ġ" is the byte-level symbol for a space


def pad_tokenizer(tokenizer: Tokenizer, vocab_size: int) -> Tokenizer:
    """Append filler tokens to the BPE vocabulary until it has ``vocab_size`` entries.

    The fillers have no merges, so encoding never produces them, but they decode to
    readable pseudo-words, which keeps the output of random-weight models printable.
    """
    data: dict[str, Any] = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    size = tokenizer.get_vocab_size()
    if vocab_size < size:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the trained {size}")
    index = 0
    while size < vocab_size:
        word = _filler_word(index)
        index += 1
        if word not in vocab:
            vocab[word] = size
            size += 1
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """Tokens ordered by id (what CTranslate2's ``register_vocabulary`` expects)."""
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    tokens = [token for token, _ in by_id]
    if [i for _, i in by_id] != list(range(len(tokens))):
        raise RuntimeError("tokenizer ids are not contiguous")
    return tokens


def token_bytes(token: str) -> bytes:
    """The raw bytes a byte-level token stands for."""
    return bytes(_BYTE_DECODER[ch] for ch in token)


def valid_text(data: bytes) -> bool:
    """Decodes on its own and has no control characters other than tab and newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch in "\t\n" or ch.isprintable() for ch in text)


def ends_incomplete(data: bytes) -> bool:
    """True if ``data`` ends inside a multi-byte UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return False
        if byte >= 0xC0:  # lead byte: 110xxxxx / 1110xxxx / 11110xxx
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back < need
    return False


def _byte_decoder() -> dict[str, int]:
    # GPT-2's printable stand-ins for bytes (same table as tokenizers' ByteLevel).
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


_BYTE_DECODER = _byte_decoder()
