"""Guided decoding through the whole stack, driven by Scale's LLM Engine client unchanged: its
guided_choice, guided_regex and guided_json give outputs that match, streamed as well, and a
regex the library cannot compile is a 400 before any job exists."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import jsonschema
import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack

PROMPT = "The river runs"
REGEX = r"[0-9]{3}-[a-z]{4}"
SCHEMA = {
    "type": "object",
    # Bounded, so that even a sampled output ends within the request's tokens.
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z ]{1,8}$"},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "ok"],
    "additionalProperties": False,
}


@pytest.fixture
def llmengine(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LLM_ENGINE_DISABLE_VERSION_CHECK", "true")  # no PyPI call at import
    monkeypatch.setenv("LLM_ENGINE_BASE_PATH", stack.base_url + "/")
    monkeypatch.setenv("SCALE_API_KEY", stack.api_key)
    return importlib.import_module("llmengine")


def create(llmengine: Any, **fields: Any) -> Any:
    return llmengine.Completion.create(model=DEV_MODEL_NAME, prompt=PROMPT, **fields)


def test_guided_outputs_match_their_guides(llmengine: Any) -> None:
    free = create(llmengine, max_new_tokens=8, temperature=0).output.text
    assert not re.fullmatch(REGEX, free)  # only the guide makes the model's output match

    regex = create(llmengine, max_new_tokens=12, temperature=0, guided_regex=REGEX)
    assert re.fullmatch(REGEX, regex.output.text), regex.output.text

    sampled = create(llmengine, max_new_tokens=48, temperature=0.8, guided_json=SCHEMA)
    jsonschema.validate(json.loads(sampled.output.text), SCHEMA)

    choices = ["the water", "a mill", "stone"]
    choice = create(llmengine, max_new_tokens=8, guided_choice=choices)
    assert choice.output.text in choices


def test_a_streamed_guided_completion_adds_up_to_its_text(llmengine: Any) -> None:
    fields = {"max_new_tokens": 12, "temperature": 0, "guided_regex": REGEX}
    chunks = list(create(llmengine, stream=True, **fields))
    text = "".join(c.output.text for c in chunks)
    assert re.fullmatch(REGEX, text)
    assert chunks[-1].output.finished and chunks[-1].error is None
    assert text == create(llmengine, **fields).output.text


def test_a_regex_the_library_refuses_is_a_400_naming_it(llmengine: Any) -> None:
    with pytest.raises(llmengine.errors.BadRequestError) as raised:
        create(llmengine, max_new_tokens=4, guided_regex="[0-9")
    assert "guided_regex: " in str(raised.value)
