"""The events' JSON Schemas, generated from their models into events/*.schema.json.

    python -m headrace.core.event_schemas events    # regenerate the committed files

Each bus event's schema is the whole EventBridge event (the envelope a rule's target receives)
with its `detail`; the webhook's is the body POSTed to a callback_url.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from headrace.core.events import (
    FINAL_DETAIL_TYPES,
    REJECTED,
    REQUESTED,
    SOURCE,
    STARTED,
    CompletionEventDetail,
    IntakeRequest,
    RejectedDetail,
    WebhookPayload,
)

_BASE = "urn:headrace:events:"


def _envelope(
    name: str, title: str, detail_types: list[str], source: str | None, detail: type[BaseModel]
) -> dict[str, Any]:
    mode: JsonSchemaMode = "validation" if detail is IntakeRequest else "serialization"
    detail_schema = detail.model_json_schema(mode=mode)
    defs = detail_schema.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE}{name}",
        "title": title,
        "type": "object",
        "required": ["detail-type", "source", "detail"],
        "properties": {
            "version": {"type": "string"},
            "id": {"type": "string", "description": "EventBridge's id of this event"},
            "detail-type": {"enum": detail_types},
            "source": {"const": source} if source else {"type": "string"},
            "account": {"type": "string"},
            "time": {"type": "string"},
            "region": {"type": "string"},
            "resources": {"type": "array", "items": {"type": "string"}},
            "detail": detail_schema,
        },
        **({"$defs": defs} if defs else {}),
    }


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema."""
    webhook = WebhookPayload.model_json_schema(mode="serialization")
    return {
        "completion-requested.schema.json": _envelope(
            "completion-requested",
            "Completion Requested: a request to the intake (the detail is also what a message "
            "sent to the intake queue holds)",
            [REQUESTED],
            None,
            IntakeRequest,
        ),
        "completion-event.schema.json": _envelope(
            "completion-event",
            "A job's event: Completion Started, Succeeded, Failed, Cancelled or Timed Out",
            [STARTED, *FINAL_DETAIL_TYPES.values()],
            SOURCE,
            CompletionEventDetail,
        ),
        "completion-rejected.schema.json": _envelope(
            "completion-rejected",
            "Completion Rejected: an intake request refused, and why",
            [REJECTED],
            SOURCE,
            RejectedDetail,
        ),
        "webhook.schema.json": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_BASE}webhook",
            **webhook,
        },
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (directory / name).write_text(render(schema))


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "events"))
