"""DynamoDB's typed attribute values, as the low-level client reads and writes them."""

from __future__ import annotations

from typing import Any

Item = dict[str, dict[str, Any]]


def number(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def text(item: Item, name: str) -> str | None:
    """The string attribute `name` of `item`; None when it has none."""
    return str(item[name]["S"]) if name in item else None
