"""Putting events on the bus: ten entries a call, and the entries EventBridge refused (it says
which, in `FailedEntryCount` and per entry) put again, a few times."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from headrace.api.services import ApiServices
from headrace.core.aws_calls import TRANSIENT_ERRORS, call_aws
from headrace.core.events import SOURCE

logger = logging.getLogger("headrace.events")

ENTRIES_PER_CALL = 10
ENTRY_TRIES = 3


@dataclass(frozen=True)
class Outgoing:
    detail_type: str
    detail: str  # JSON
    tag: int = 0  # the caller's: which of its records the entry came from


def put_events(services: ApiServices, entries: list[Outgoing]) -> list[Outgoing]:
    """Put `entries` on the bus; the ones still refused after ENTRY_TRIES, or whose calls
    failed, are returned (the caller retries them later)."""
    failed: list[Outgoing] = []
    for start in range(0, len(entries), ENTRIES_PER_CALL):
        pending = entries[start : start + ENTRIES_PER_CALL]
        for _ in range(ENTRY_TRIES):
            try:
                answer = call_aws(
                    services.events.put_events, Entries=[_entry(services, e) for e in pending]
                )
            except TRANSIENT_ERRORS as e:
                logger.warning("put_events failed: %s", e.detail)
                continue
            results = answer.get("Entries", [])
            pending = [e for e, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
            if not pending:
                break
            logger.warning("EventBridge refused %d entries; putting them again", len(pending))
        failed.extend(pending)
    return failed


def _entry(services: ApiServices, outgoing: Outgoing) -> dict[str, str]:
    return {
        "EventBusName": services.settings.event_bus_name,
        "Source": SOURCE,
        "DetailType": outgoing.detail_type,
        "Detail": outgoing.detail,
    }
