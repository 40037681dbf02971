"""A short `make chaos` inside `make test`: 80 jobs over HTTP and WebSocket while a worker is
killed three times (and once stopped with SIGTERM), each replaced. The suite's verdict is the
assertion: nothing lost or stuck, no double result, no stream, follower or greedy mismatch, and
the dead-letter queue agrees with the job states; and the kills did cut jobs short (some were
retried), or the verdict would say nothing about them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.suites.chaos.__main__ import parse_args
from tests.suites.chaos.run import run

JOBS = 80
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
    "re-delivered",
    "DLQ",
    "jobs/s",
)


@pytest.mark.timeout(300)
def test_80_jobs_under_three_kills_lose_nothing(
    model_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "chaos"
    # Faults 1-2 s apart, the first within the burst: 80 jobs of the tiny model all ended
    # within 2.6 s on a fast machine, before a first fault 2-4 s in, and no kill cut one.
    short = ["--jobs", str(JOBS), "--kills", "3", "--kill-every", "1-2", "--budget", "270"]
    args = parse_args([*short, "--out", str(out), "--home", str(model_home)])

    code = run(args)

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "chaos: PASS" in printed and "3 SIGKILL, 1 SIGTERM" in printed, printed
    for label in REPORT_LABELS:
        assert f"\n  {label} " in printed, label
    report = json.loads((out / "report.json").read_text())
    findings = report["findings"]
    assert findings["submitted"] == JOBS
    retried = sum(jobs for attempts, jobs in findings["attempts"].items() if int(attempts) > 1)
    assert retried > 0, findings["attempts"]
    assert (out / "logs" / "worker-1.log").is_file()
