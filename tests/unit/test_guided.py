"""Guided decoding: the checks at the door (headrace/core/guides.py), the masked draw, and the
decode loop and scheduling with the real engine over the dev model (worker/guided.py,
worker/guided_jobs.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from headrace.core.contracts import CompletionRequest, parse_completion_request
from headrace.core.errors import InvalidRequest
from headrace.core.guides import MAX_GUIDED_CHOICES, check_guide
from tests.scheduling import batches, greedy, runner, serving
from worker.decoding import ItemDecoder, TextCodec, sampling_params
from worker.engine import Engine, EngineConfig, SamplingParams
from worker.guided import GuideRefused, Guides, pick
from worker.guided_jobs import alone_if_guided, run_guided
from worker.scheduler import RequestRefused

PROMPT = "The river runs"
SCHEMA = {
    "type": "object",
    # Bounded, so that even a sampled output ends within the test's tokens.
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z ]{1,10}$"},
        "age": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def request(**fields: Any) -> CompletionRequest:
    return parse_completion_request(json.dumps({"prompt": PROMPT, **fields}))


# --- the door ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"guided_regex": "a", "guided_json": {}}, r"^guided_regex, guided_json: at most one"),
        ({"guided_choice": []}, r"^guided_choice: a non-empty list of non-empty strings"),
        ({"guided_choice": ["a", ""]}, r"^guided_choice: a non-empty list"),
        ({"guided_choice": ["a"] * (MAX_GUIDED_CHOICES + 1)}, r"^guided_choice: at most 256"),
        ({"guided_regex": "(unclosed"}, r"^guided_regex: .*unclosed group"),
        ({"guided_json": {"type": "wat"}}, r"^guided_json: Invalid type: wat"),
        ({"guided_json": {"$ref": "#/defs/x"}}, r"^guided_json: .*/defs/x"),
        ({"guided_grammar": "start: nothing_here"}, r"^guided_grammar: .*unknown name"),
    ],
)
def test_a_guide_the_library_refuses_is_a_400_naming_its_field(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        check_guide(request(**fields))
    assert "\n" not in raised.value.detail


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"guided_regex": "[0-9]{3}"},
        {"guided_json": SCHEMA},
        {"guided_choice": ["yes", "no"]},
        {"guided_grammar": 'start: "yes" | NUM\nNUM: /[0-9]+/'},
    ],
)
def test_a_guide_the_library_takes_passes(fields: dict[str, Any]) -> None:
    check_guide(request(**fields))


# --- the masked draw ---------------------------------------------------------------------

ROW = np.array([5.0, 4.0, 3.0, 2.0, 1.0], dtype=np.float32)


def mask(*allowed: int) -> Any:
    result = np.zeros(ROW.size, dtype=np.bool_)
    result[list(allowed)] = True
    return result


def test_greedy_takes_the_best_allowed_token() -> None:
    rng = np.random.default_rng(0)
    assert pick(ROW, mask(2, 4), SamplingParams(top_k=1), rng) == 2


def test_sampling_draws_only_allowed_tokens_and_all_of_them() -> None:
    rng = np.random.default_rng(0)
    drawn = {pick(ROW, mask(1, 3), SamplingParams(top_k=0), rng) for _ in range(200)}
    assert drawn == {1, 3}


def test_a_cut_with_nothing_allowed_falls_back_to_the_allowed_tokens() -> None:
    rng = np.random.default_rng(0)
    # top_k 2 keeps tokens 0 and 1, neither allowed: the draw is among the allowed ones.
    drawn = {pick(ROW, mask(3, 4), SamplingParams(top_k=2), rng) for _ in range(100)}
    assert drawn == {3, 4}
    # top_p keeps the most likely token alone; allowed, it is always drawn.
    assert {pick(ROW, mask(0, 4), SamplingParams(top_k=0, top_p=0.1), rng) for _ in range(50)} == {
        0
    }


def test_a_guided_job_is_planned_alone() -> None:
    class Job:
        def __init__(self, request: CompletionRequest) -> None:
            self.request = request

    plain, guided = Job(request()), Job(request(guided_regex="a"))
    assert alone_if_guided([plain, guided, plain]) == [guided]
    assert alone_if_guided([plain, plain]) == [plain, plain]


# --- with the engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(dev_model_dir: Path) -> Iterator[Engine]:
    loaded = Engine(dev_model_dir, EngineConfig("cpu", "default", 2, 1))
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def guides(engine: Engine, dev_model_dir: Path) -> Guides:
    codec = TextCodec.from_file(
        dev_model_dir / "tokenizer.json", bos_token=engine.bos_token, eos_token=engine.eos_token
    )
    return Guides(codec)


def decode(
    engine: Engine, guides: Guides, req: CompletionRequest, resumed: list[int] | None = None
) -> ItemDecoder:
    codec = guides.codec
    prompt = codec.prompt_tokens(req.prompt)
    decoder = ItemDecoder(codec, req, len(prompt))
    if resumed:
        decoder.resume(resumed, [])
        prompt += [codec.token(i) for i in resumed]
    params = sampling_params(req, codec.vocabulary_size)
    run_guided(
        engine,
        guides,
        req,
        prompt,
        resumed or [],
        params,
        lambda step: decoder.on_step(step) or decoder.finished,
    )
    decoder.finish()
    return decoder


@pytest.mark.parametrize("temperature", [0, 1])
def test_regex_output_matches_where_the_free_model_does_not(
    engine: Engine, guides: Guides, temperature: float
) -> None:
    regex = r"[0-9]{3}-[a-z]{4}"
    free = decode_free(engine, guides, request(max_new_tokens=12, temperature=0))
    assert not re.fullmatch(regex, free)
    guided = decode(
        engine, guides, request(max_new_tokens=12, temperature=temperature, guided_regex=regex)
    )
    assert re.fullmatch(regex, guided.text), guided.text


def decode_free(engine: Engine, guides: Guides, req: CompletionRequest) -> str:
    prompt = guides.codec.prompt_tokens(req.prompt)
    decoder = ItemDecoder(guides.codec, req, len(prompt))
    engine.generate(
        [prompt],
        params=sampling_params(req),
        max_new_tokens=req.max_new_tokens,
        return_log_probs=False,
        on_step=decoder.on_step,
    )
    return decoder.finish().text


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_json_output_is_valid_under_its_schema(
    engine: Engine, guides: Guides, temperature: float
) -> None:
    fields = {"max_new_tokens": 48, "temperature": temperature, "top_k": 40}
    decoder = decode(engine, guides, request(**fields, guided_json=SCHEMA))
    jsonschema.validate(json.loads(decoder.text), SCHEMA)


def test_a_grammar_output_is_in_its_language(engine: Engine, guides: Guides) -> None:
    grammar = 'start: "yes" | "no" | NUM\nNUM: /[0-9]{2}/'
    decoder = decode(engine, guides, request(max_new_tokens=8, guided_grammar=grammar))
    assert re.fullmatch(r"yes|no|[0-9]{2}", decoder.text)


def test_a_choice_is_the_likeliest_by_the_engines_own_scores(
    engine: Engine, guides: Guides
) -> None:
    choices = ["river", "mill", "the water", "x"]
    codec = guides.codec
    prompt = codec.prompt_tokens(PROMPT)
    ids = [codec.tokenizer.encode(c, add_special_tokens=False).ids for c in choices]
    scores = engine.score([prompt + [codec.token(i) for i in t] for t in ids])
    totals = [sum(s[len(s) - len(t) :]) for s, t in zip(scores, ids, strict=True)]
    best = int(np.argmax(totals))
    req = request(guided_choice=choices, return_token_log_probs=True)
    out = decode(engine, guides, req).finish()
    assert out.text == choices[best]
    assert out.num_completion_tokens == len(ids[best])
    assert out.tokens is not None and sum(t.log_prob for t in out.tokens) == pytest.approx(
        totals[best]
    )


def test_out_of_tokens_the_output_is_the_truncated_text(engine: Engine, guides: Guides) -> None:
    req = request(max_new_tokens=3, temperature=0, guided_regex="[0-9]{12}")
    decoder = decode(engine, guides, req)
    assert decoder.num_completion_tokens == 3
    assert re.fullmatch(r"[0-9]{1,11}", decoder.text)  # the start of a match, no more


def test_a_resumed_job_continues_inside_its_constraint(engine: Engine, guides: Guides) -> None:
    regex = r"[0-9]{3}-[a-z]{4}"
    whole = decode(engine, guides, request(max_new_tokens=12, temperature=0, guided_regex=regex))
    first = whole.token_ids[:2]
    resumed = decode(
        engine, guides, request(max_new_tokens=12, temperature=0, guided_regex=regex), first
    )
    assert resumed.text == whole.text
    choice = request(guided_choice=["the water", "the mill"])
    chosen = decode(engine, guides, choice)
    again = decode(engine, guides, choice, chosen.token_ids[:1])
    assert again.text == chosen.text


def test_the_library_refusing_at_run_time_is_a_refusal(engine: Engine, guides: Guides) -> None:
    with pytest.raises(GuideRefused, match=r"^guided_regex: "):
        decode(engine, guides, CompletionRequest(prompt=PROMPT, guided_regex="(unclosed"))


def test_a_guided_job_runs_alone_and_streams_like_any_other(
    engine: Engine, dev_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = runner(engine, dev_model_dir, hold=0.2)
    guided = request(max_new_tokens=12, temperature=0, guided_regex=r"[0-9]{3}-[a-z]{4}")
    bad = CompletionRequest(prompt=PROMPT, guided_json={"type": "wat"})

    async def body() -> list[Any]:
        jobs = [model.complete(f"plain{i}", greedy("The mill", 6)) for i in range(2)]
        jobs += [model.complete("guided", guided), model.complete("bad", bad)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    plain0, plain1, decoded, refused = asyncio.run(serving(model, body))
    assert re.fullmatch(r"[0-9]{3}-[a-z]{4}", decoded.output.text)
    assert plain0.output.num_completion_tokens == plain1.output.num_completion_tokens == 6
    assert isinstance(refused, RequestRefused) and refused.detail.startswith("guided_json: ")
    assert ["guided"] not in batches(caplog)  # guided jobs are no engine batch
    assert sorted(job for batch in batches(caplog) for job in batch) == ["plain0", "plain1"]
