"""What the fuzz suite counts: requests and frames sent, and every answer that breaks a rule."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# API Gateway's own answers when an integration fails or times out (headrace.dev.ws_events).
GATEWAY_FAILURES = ("Internal server error", "Endpoint request timed out")


def parse_json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class Tally:
    http_requests: int = 0
    ws_frames: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx, or an error event saying 5xx
    non_json_errors: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # no response, or no reply to a frame
    ws_closes: Counter[str] = field(default_factory=Counter)  # the server closed: case -> code
    failed_jobs: list[str] = field(default_factory=list)  # accepted, then not SUCCEEDED
    # Accepted (2xx or an ack), then refused as invalid input by the worker: reported, and left
    # to judgement (README: input errors are a 4xx before any event).
    rejected_late: list[str] = field(default_factory=list)
    wrong_answers: list[str] = field(default_factory=list)  # e.g. another key's job not a 404
    schema_failures: Counter[str] = field(default_factory=Counter)  # schemathesis checks
    not_run: list[str] = field(default_factory=list)  # a part of the suite that did not run
    notes: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)  # every hand case and its answer

    def http(self, case: str, status: int | None, body: bytes, *, count: bool = True) -> Any:
        """Record one HTTP answer (None: no answer); returns the body as JSON, or None."""
        if count:
            self.http_requests += 1
        if not case.startswith("schemathesis"):
            self.transcript.append(f"{case} -> {status} {body[:200]!r}")
        if status is None:
            self.unanswered.append(f"{case}: no HTTP response ({body.decode(errors='replace')})")
            return None
        self.statuses[status] += 1
        parsed = parse_json(body) if body else None
        if status >= 500:
            self.server_errors.append(f"{case}: HTTP {status} {body[:160]!r}")
        if status >= 400 and parsed is None:
            self.non_json_errors.append(f"{case}: HTTP {status} {body[:80]!r}")
        return parsed

    def reply(self, case: str, data: str) -> Any:
        """Record one WebSocket text frame or server-sent event; returns it as JSON, or None."""
        self.transcript.append(f"{case} -> {data[:200]}")
        parsed = parse_json(data)
        if parsed is None:
            self.non_json_errors.append(f"{case}: frame not JSON {data[:80]!r}")
            return None
        if is_server_error(parsed):
            self.server_errors.append(f"{case}: {data[:200]}")
        return parsed

    def failing(self) -> int:
        """Answers that break the suite's rules: 5xx, no answer, a job that failed after it was
        accepted, a wrong answer to a hand case, a failed schemathesis check, a part that
        did not run."""
        return (
            len(self.server_errors)
            + len(self.unanswered)
            + len(self.failed_jobs)
            + len(self.wrong_answers)
            + len(self.not_run)
            + sum(self.schema_failures.values())
        )


def is_server_error(frame: Any) -> bool:
    if not isinstance(frame, dict):
        return False
    error = frame.get("error")
    if isinstance(error, dict) and int(error.get("status_code") or 0) >= 500:
        return True
    return frame.get("message") in GATEWAY_FAILURES
