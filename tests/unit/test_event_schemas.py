"""events/*.schema.json are current (generated from the event models) and valid JSON Schema.
(That the events the stack emits validate against them: tests/e2e/events/test_events_e2e.py and
tests/e2e/events/test_webhooks_e2e.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from headrace.core.event_schemas import render, schemas

EVENTS = Path(__file__).resolve().parents[2] / "events"


def test_the_committed_schemas_are_current() -> None:
    expected = schemas()
    assert sorted(p.name for p in EVENTS.glob("*.schema.json")) == sorted(expected)
    for name, schema in expected.items():
        assert (EVENTS / name).read_text() == render(schema), (
            f"events/{name} is stale: regenerate with `python -m headrace.core.event_schemas`"
        )


def test_they_are_valid_json_schemas() -> None:
    for path in EVENTS.glob("*.schema.json"):
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))
