"""What the e2e tests import to drive the local stack: a plain HTTP client for its gateway, and
a stack of their own with short timings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack, StackOptions

# Short timings through settings, never long sleeps: a lapsed lease is retried within seconds.
FAST_PARAMETERS = {"VisibilityTimeoutSeconds": "3", "MaxReceiveCount": "3"}
FAST_SETTINGS = {
    "HEADRACE_SYNC_WAIT_SECONDS": "20",
    "HEADRACE_MAX_NEW_TOKENS_LIMIT": "8192",
    "HEADRACE_PRESENCE_TTL_SECONDS": "6",
    "HEADRACE_RECEIVE_WAIT_SECONDS": "2",
    "HEADRACE_SHUTDOWN_GRACE_SECONDS": "5",
    "HEADRACE_LOG_LEVEL": "INFO",
}


class Api:
    """A plain HTTP client for the local gateway (urllib: no client library under test)."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self.api_key is not None:
            request.add_header("x-api-key", self.api_key)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            payload = e.read()
            e.close()
            return e.code, json.loads(payload) if payload else None

    def submit(self, body: dict[str, Any], model: str = DEV_MODEL_NAME) -> str:
        status, answer = self.call(
            "POST", f"/v1/llm/completions-async?model_endpoint_name={model}", body
        )
        assert status == 202, answer
        return str(answer["request_id"])

    def wait(self, request_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.call("GET", f"/v1/llm/completions/{request_id}")
            assert status == 200, job
            if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"):
                return dict(job)
            assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s"
            time.sleep(0.05)


def make_stack(home: Path, logs_dir: Path, *, workers: int) -> LocalStack:
    stack = LocalStack(
        StackOptions(
            home=home,
            logs_dir=logs_dir,
            gateway_port=0,
            parameters=dict(FAST_PARAMETERS),
            # A test that subscribes to a running job needs the job to outlast the worker's
            # check for new subscribers; the default 2 s is within a long dev-model job on a
            # loaded machine. (The suites keep the default: their figures are the user's.)
            settings_env={**FAST_SETTINGS, "HEADRACE_SUBSCRIBER_CHECK_MS": "400"},
        )
    )
    stack.start(workers=workers)
    return stack


def log_lines(path: Path, request_id: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a stack process, only those of `request_id` when given."""
    lines = []
    for raw in path.read_text().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if request_id is None or line.get("request_id") == request_id:
            lines.append(line)
    return lines
