"""The hand HTTP cases against a running stack, and the jobs they got accepted."""

from __future__ import annotations

import json
import time
import uuid

from headrace.core import routes
from tests.suites.fuzz.http_cases import (
    MODEL_QUERY,
    SMALL_JOB,
    SUBMIT_ROUTES,
    Answer,
    Header,
    bad_header_sets,
    every_route,
    hostile_bodies,
    send,
    send_raw,
    unparsable_requests,
)
from tests.suites.fuzz.tally import Tally

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")
OVER_10_MB = 10 * 1024 * 1024 + 1024
WS_UPGRADE: list[Header] = [
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
]


class HttpFuzzer:
    def __init__(self, base_url: str, api_key: str, other_key: str, tally: Tally) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.other_key = other_key
        self.tally = tally
        self.accepted: list[tuple[str, str]] = []  # (case, request_id) of jobs that must end well
        self.real_id: str | None = None  # a job of api_key's, for the other key to ask about

    def call(
        self, case: str, method: str, path: str, headers: list[Header], body: bytes | None = None
    ) -> Answer:
        if body is not None and all(name != "content-type" for name, _ in headers):
            headers = [("content-type", "application/json"), *headers]
        answer = send(self.base_url, method, path, headers, body)
        parsed = self.tally.http(case, answer.status, answer.body)
        if "text/event-stream" in answer.headers.get("content-type", ""):
            self._events(case, answer.body)
        submitted = path.split("?")[0] in SUBMIT_ROUTES and answer.status in (200, 202)
        if submitted and isinstance(parsed, dict) and "request_id" in parsed:
            self.accepted.append((case, str(parsed["request_id"])))
        return answer

    def _events(self, case: str, body: bytes) -> None:
        events = [
            self.tally.reply(case, line.removeprefix("data:").strip())
            for line in body.decode(errors="replace").splitlines()
            if line.startswith("data:")
        ]
        first = events[0] if events and isinstance(events[0], dict) else {}
        status = (first.get("error") or {}).get("status_code") or 0
        if 400 <= status < 500:
            self.tally.rejected_late.append(f"{case}: 200, then an input error event {status}")

    def keyed(self) -> list[Header]:
        return [("x-api-key", self.api_key)]

    def run_all(self) -> None:
        self.bad_headers_everywhere()
        self.bad_headers_at_handshake()
        self.unparsable_requests()
        self.hostile_bodies()
        self.request_ids()
        self.oversized_bodies()

    def bad_headers_everywhere(self) -> None:
        for name, headers in bad_header_sets(self.api_key):
            for method, path, body in every_route():
                self.call(f"{name}: {method} {path}", method, path, headers, body)

    def bad_headers_at_handshake(self) -> None:
        cases = [(f"handshake, {n}", "/ws", h) for n, h in bad_header_sets(self.api_key)]
        cases.append(("handshake, api_key query %FF%FE", "/ws?api_key=%FF%FE%C3%28", []))
        cases.append(("handshake, api_key query %0A", "/ws?api_key=%0A", []))
        for case, path, headers in cases:
            answer = send(self.base_url, "GET", path, [*WS_UPGRADE, *headers])
            self.tally.http(case, answer.status, answer.body)

    def unparsable_requests(self) -> None:
        for name, raw in unparsable_requests(self.api_key):
            answer = send_raw(self.base_url, raw)
            self.tally.http(f"unparsable: {name}", answer.status, answer.body)
            if answer.status is not None and not 400 <= answer.status < 500:
                self.tally.wrong_answers.append(f"unparsable: {name}: HTTP {answer.status}")

    def hostile_bodies(self) -> None:
        for name, body in hostile_bodies():
            for route in SUBMIT_ROUTES:
                self.call(f"{name}: POST {route}", "POST", route + MODEL_QUERY, self.keyed(), body)

    def request_ids(self) -> None:
        real = send(
            self.base_url,
            "POST",
            routes.COMPLETIONS_ASYNC + MODEL_QUERY,
            [("content-type", "application/json"), *self.keyed()],
            json.dumps(SMALL_JOB).encode(),
        )
        self.tally.http("submit for the request-id cases", real.status, real.body)
        real_id = json.loads(real.body)["request_id"] if real.status == 202 else str(uuid.uuid4())
        self.real_id = real_id
        for label, request_id in (
            ("%0A inside", "abc%0Adef"),
            ("only %0A", "%0A"),
            ("real id + %0A", real_id + "%0A"),
            ("real id + %0D%0A", real_id + "%0D%0A"),
            ("%00", "abc%00"),
            ("%FF%FE", "%FF%FE"),
            ("10 KB id", "a" * 10_000),
        ):
            path = routes.COMPLETION.format(request_id=request_id)
            self.call(f"request id {label}", "GET", path, self.keyed())
        path = routes.COMPLETION.format(request_id=real_id)
        answer = self.call("another key's job", "GET", path, [("x-api-key", self.other_key)])
        if answer.status != 404:
            self.tally.wrong_answers.append(f"another key's job answered {answer.status}, not 404")

    def oversized_bodies(self) -> None:
        prompt = "a" * OVER_10_MB
        body = json.dumps({"prompt": prompt, "max_new_tokens": 4}).encode()
        for route in (routes.COMPLETIONS_STREAM, routes.COMPLETIONS_ASYNC):
            case = f"body over 10 MB: POST {route}"
            answer = self.call(case, "POST", route + MODEL_QUERY, self.keyed(), body)
            if answer.status != 413:
                self.tally.wrong_answers.append(f"{case}: {answer.status}, not 413")

    def wait_for_accepted(self, timeout: float) -> None:
        """Every accepted job must end SUCCEEDED (bounded wait, then the rest count as failed)."""
        deadline = time.monotonic() + timeout
        pending = {rid: case for case, rid in self.accepted}
        while pending:
            for request_id, case in list(pending.items()):
                answer = send(
                    self.base_url,
                    "GET",
                    routes.COMPLETION.format(request_id=request_id),
                    self.keyed(),
                )
                job = json.loads(answer.body) if answer.status == 200 else {}
                status = job.get("status")
                if status in FINAL:
                    del pending[request_id]
                    error = job.get("error") or {}
                    if error.get("type") == "invalid_request":
                        self.tally.rejected_late.append(f"{case}: job FAILED: {error}")
                    elif status != "SUCCEEDED":
                        self.tally.failed_jobs.append(f"{case}: job {status}: {error}")
            if pending and time.monotonic() > deadline:
                for request_id, case in pending.items():
                    self.tally.failed_jobs.append(f"{case}: job {request_id} not final after wait")
                return
            time.sleep(0.25)
