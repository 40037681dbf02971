"""The per-request decoder: stop sequences, what a stream may show, limits, end of text."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from headrace.core.contracts import CompletionRequest
from worker.decoding import ItemDecoder, TextCodec, sampling_params
from worker.engine import SamplingParams, Step

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def codec(dev_model_dir: Path) -> TextCodec:
    tokenizer = Tokenizer.from_file(str(dev_model_dir / "tokenizer.json"))
    return TextCodec(tokenizer, bos_token=EOS, eos_token=EOS)


def feed(decoder: ItemDecoder, text: str) -> list[tuple[bool, str]]:
    """Feed `text` token by token; (stop?, visible text) after each."""
    ids = decoder.codec.tokenizer.encode(text).ids
    seen = []
    for i, token_id in enumerate(ids):
        stop = decoder.on_step(Step(i, token_id, -0.5, False))
        seen.append((stop, decoder.text[: decoder.safe_len]))
        if stop:
            break
    return seen


def request(**fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": "x", "max_new_tokens": 100, **fields})


def test_stop_sequence_cuts_and_nothing_of_it_is_ever_shown(codec: TextCodec) -> None:
    decoder = ItemDecoder(codec, request(stop_sequences=["STOP here"]), 1)
    seen = feed(decoder, "The mill turns. STOP here and more")
    assert seen[-1][0] is True
    assert decoder.text == "The mill turns. "
    assert all("STOP" not in visible for _, visible in seen)
    assert decoder.finish().text == "The mill turns. "


def test_stop_sequence_kept_when_asked(codec: TextCodec) -> None:
    decoder = ItemDecoder(
        codec, request(stop_sequences=["wheel"], include_stop_str_in_output=True), 1
    )
    feed(decoder, "the wheel turns")
    assert decoder.finish().text == "the wheel"


def test_max_new_tokens_stops_on_the_last_allowed_token(codec: TextCodec) -> None:
    decoder = ItemDecoder(codec, request(max_new_tokens=3), 1)
    seen = feed(decoder, "one two three four five")
    assert [stop for stop, _ in seen] == [False, False, True]
    assert decoder.finish().num_completion_tokens == 3


def test_end_token_is_dropped(codec: TextCodec) -> None:
    decoder = ItemDecoder(codec, request(), 1)
    feed(decoder, "water")
    assert decoder.on_step(Step(0, codec.eos_id, -0.1, True)) is True
    output = decoder.finish()
    assert output.text == "water"
    assert output.num_completion_tokens == len(codec.tokenizer.encode("water").ids)


def test_multibyte_characters_are_never_split(codec: TextCodec) -> None:
    decoder = ItemDecoder(codec, request(), 1)
    seen = feed(decoder, "日本語 🚀 ok")
    assert all("\ufffd" not in visible for _, visible in seen)
    assert decoder.finish().text == "日本語 🚀 ok"


def test_log_probs_one_per_token(codec: TextCodec) -> None:
    decoder = ItemDecoder(codec, request(return_token_log_probs=True), 1)
    feed(decoder, "the river")
    output = decoder.finish()
    assert output.tokens is not None
    assert len(output.tokens) == output.num_completion_tokens
    assert "".join(t.token for t in output.tokens) == "the river"


def test_progress_carries_the_tokens_from_since_and_all_the_visible_text(
    codec: TextCodec,
) -> None:
    decoder = ItemDecoder(codec, request(return_token_log_probs=True, stop_sequences=["END"]), 4)
    feed(decoder, "the river runs E")
    ids = decoder.token_ids
    progress = decoder.progress(since=2)
    assert progress.num_tokens == len(ids) and progress.since == 2
    assert progress.token_ids == tuple(ids[2:])
    assert progress.visible_after == tuple(decoder.visible_after[2:])
    assert [t.token for t in progress.tokens] == [t.token for t in decoder.tokens[2:]]
    assert progress.text == "the river runs " and not progress.finished  # "E" may start "END"
    assert progress.num_prompt_tokens == 4
    decoder.finish()
    progress = decoder.progress(since=len(ids))
    assert progress.finished and progress.text == "the river runs E"
    assert progress.token_ids == progress.visible_after == () and progress.tokens == ()


def test_prompt_starts_with_the_begin_token(codec: TextCodec) -> None:
    assert codec.prompt_tokens("a")[0] == EOS
    assert len(codec.prompt_tokens("a")) >= 2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"temperature": 0}, SamplingParams(top_k=1, top_p=1.0, temperature=1.0)),
        ({"temperature": 0, "top_k": 5}, SamplingParams(top_k=1, top_p=1.0, temperature=1.0)),
        ({"temperature": 0.7}, SamplingParams(top_k=0, top_p=1.0, temperature=0.7)),
        ({"temperature": 0.7, "top_k": -1}, SamplingParams(top_k=0, top_p=1.0, temperature=0.7)),
        (
            {"temperature": 0.5, "top_k": 40, "top_p": 0.9},
            SamplingParams(top_k=40, top_p=0.9, temperature=0.5),
        ),
    ],
)
def test_sampling_params(fields: dict[str, object], expected: SamplingParams) -> None:
    assert sampling_params(request(**fields)) == expected
