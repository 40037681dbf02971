"""Guided decoding's request side: which guide a request names, and whether it can run.

The API checks a guide at the door with the same library the worker decodes with (llguidance),
so a regex, JSON Schema or grammar it cannot compile is a 400 naming the field and never
becomes a job. llguidance is imported on first use: a handler that never sees a guide does not
pay for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from headrace.core.errors import InvalidRequest

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

    from headrace.core.contracts import CompletionRequest

GuideField = Literal["guided_choice", "guided_regex", "guided_json", "guided_grammar"]
GUIDE_FIELDS: tuple[GuideField, ...] = (
    "guided_choice",
    "guided_regex",
    "guided_json",
    "guided_grammar",
)
# Every choice is scored against the prompt (worker/guided.py), so each one costs a prompt's
# forward pass.
MAX_GUIDED_CHOICES = 256
# Between JSON tokens, at most one space (outlines' default): free whitespace lets a model
# spend its tokens on blanks, so a sampled output often ran out before its JSON ended. A schema
# may ask for more under llguidance's "x-guidance" key ({"whitespace_flexible": true}).
JSON_WHITESPACE = "[ ]?"


def guide_field(request: CompletionRequest) -> GuideField | None:
    """The guided_* field the request sets (check_guide makes sure it sets at most one)."""
    for name in GUIDE_FIELDS:
        if getattr(request, name) is not None:
            return name
    return None


def grammar_of(request: CompletionRequest) -> tuple[GuideField, str] | None:
    """The llguidance grammar of a guided_regex, guided_json or guided_grammar request, with
    its field; None without one (guided_choice is scored, not decoded under a grammar)."""
    import llguidance

    if request.guided_regex is not None:
        return "guided_regex", llguidance.LLMatcher.grammar_from_regex(request.guided_regex)
    if request.guided_json is not None:
        schema = json.dumps(request.guided_json)
        defaults: JsonCompileOptions = {"whitespace_pattern": JSON_WHITESPACE}
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=defaults)
        return "guided_json", grammar
    if request.guided_grammar is not None:
        return "guided_grammar", llguidance.LLMatcher.grammar_from_lark(request.guided_grammar)
    return None


def library_message(message: str) -> str:
    """llguidance's message on one line: its caret lines point into text the user never sent
    (the Lark grammar it builds)."""
    lines = (line.strip() for line in message.splitlines())
    return " ".join(line for line in lines if line and set(line) != {"^"})


def check_guide(request: CompletionRequest) -> None:
    """InvalidRequest naming the field(s) unless the request's guide, if any, can run."""
    named = [name for name in GUIDE_FIELDS if getattr(request, name) is not None]
    if len(named) > 1:
        raise InvalidRequest(f"{', '.join(named)}: at most one guided_* field per request")
    choices = request.guided_choice
    if choices is not None:
        if not choices or any(not choice for choice in choices):
            raise InvalidRequest("guided_choice: a non-empty list of non-empty strings")
        if len(choices) > MAX_GUIDED_CHOICES:
            raise InvalidRequest(f"guided_choice: at most {MAX_GUIDED_CHOICES} choices")
        return
    if not named:
        return
    import llguidance

    try:
        found = grammar_of(request)
    except ValueError as e:  # guided_json that is no JSON object
        raise InvalidRequest(f"{named[0]}: {library_message(str(e))}") from e
    assert found is not None
    field, grammar = found
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise InvalidRequest(f"{field}: {library_message(error)}")
