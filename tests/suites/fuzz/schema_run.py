"""schemathesis over every operation of openapi.json, through its CLI (`st run`), read back from
its NDJSON event log: each recorded interaction is one request."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.suites.fuzz.tally import Tally
from tests.suites.stack import REPO_ROOT

# No server error, responses as the schema says, only documented status codes.
DEFAULT_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)


def run_schemathesis(
    base_url: str,
    api_key: str,
    out: Path,
    *,
    max_examples: int,
    seed: int,
    checks: str,
    phases: str,
    timeout: float,
) -> Path:
    """Run `st run`; returns the NDJSON event log (partial if the time ran out)."""
    events = out / "schemathesis.ndjson"
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        str(REPO_ROOT / "openapi.json"),
        "--url",
        base_url,
        "--header",
        f"x-api-key: {api_key}",
        "--checks",
        checks,
        "--phases",
        phases,
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
        "--no-color",
    ]
    with (out / "schemathesis.log").open("w") as log:
        try:
            subprocess.run(command, cwd=out, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.write(f"\nstopped after {timeout:g}s: the counts cover what it did until then\n")
    return events


def read_schemathesis(events: Path, tally: Tally) -> None:
    """Count its requests and answers into the tally, and its failed checks by code."""
    if not events.is_file():
        tally.not_run.append("schemathesis wrote no event log (see schemathesis.log)")
        return
    for line in events.read_text().splitlines():
        event = json.loads(line)
        scenario = event.get("ScenarioFinished")
        if scenario is None:
            continue
        recorder = scenario.get("recorder") or {}
        label = str(recorder.get("label", "?"))
        for interaction in (recorder.get("interactions") or {}).values():
            _count_interaction(label, interaction, tally)
        for checks in (recorder.get("checks") or {}).values():
            for check in checks:
                if check.get("status") != "success" and check["name"] != "not_a_server_error":
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    code = failure.get("code", check["name"])
                    title = failure.get("title", "")
                    tally.schema_failures[
                        f"{code} {title} ({failure.get('operation', label)})"
                    ] += 1


def _count_interaction(label: str, interaction: dict[str, Any], tally: Tally) -> None:
    request = interaction.get("request") or {}
    case = f"schemathesis {request.get('method', '?')} {request.get('uri', label)}"
    response = interaction.get("response")
    if response is None:
        tally.http(case, None, b"schemathesis recorded no response")
        return
    content = response.get("content") or {}
    body = base64.b64decode(content["$base64"]) if "$base64" in content else b""
    if not body and isinstance(content.get("string"), str):
        body = content["string"].encode()
    tally.http(case, int(response["status_code"]), body)
