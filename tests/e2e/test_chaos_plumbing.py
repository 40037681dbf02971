"""The chaos suite's plumbing (`make chaos`): a calm run, no fault, starts its stack, submits
over HTTP and WebSocket, audits and prints every line of its report. It asserts nothing about
what the report finds: that is the suite's own verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.suites.chaos.__main__ import parse_args
from tests.suites.chaos.run import run

REPORT_LABELS = (
    "submitted",
    "succeeded",
    "failed",
    "stuck (not final)",
    "lost (no record)",
    "retried",
    "double results",
    "stream mismatches",
    "greedy mismatches",
    "over max_new_tokens",
    "DLQ",
    "jobs/s",
)


@pytest.mark.timeout(300)
def test_a_calm_chaos_run_prints_its_report(
    model_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chaos"
    calm = ["--jobs", "6", "--kills", "0", "--follow-every", "3", "--wait", "60"]
    args = parse_args([*calm, "--out", str(out), "--home", str(model_home)])

    code = run(args)

    printed = capsys.readouterr().out
    assert code in (0, 1), printed
    for label in REPORT_LABELS:
        assert f"\n  {label} " in printed, label
    report = json.loads((out / "report.json").read_text())
    assert report["findings"]["submitted"] == 6
    assert (out / "logs" / "worker-1.log").is_file()
