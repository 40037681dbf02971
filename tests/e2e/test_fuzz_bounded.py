"""A bounded `make fuzz` inside `make test`: every hand case (hostile headers, unparsable
requests, bodies, request ids, WebSocket frames) and a few schemathesis cases per operation (its
examples and fuzzing phases; `make fuzz` adds the coverage phase's thousands of boundary cases
and the stateful phase), against a stack of its own. The suite's verdict is the assertion: no
5xx, nothing unanswered, every error JSON, no wrong answer, no failed check, no traceback in
any log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suites.fuzz.__main__ import parse_args
from tests.suites.fuzz.run import run


@pytest.mark.timeout(420)
def test_a_bounded_fuzz_run_finds_nothing(
    model_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fuzz"
    bounded = ["--max-examples", "3", "--phases", "examples,fuzzing", "--streams", "6"]
    args = parse_args([*bounded, "--budget", "360", "--out", str(out), "--home", str(model_home)])

    code = run(args)

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "fuzz: PASS" in printed
