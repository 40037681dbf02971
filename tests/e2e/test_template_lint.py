"""template.yaml lints clean: cfn-lint, run as the command it is, reports nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.template import TEMPLATE_PATH


def _cfn_lint_command() -> list[str]:
    script = Path(sys.executable).with_name("cfn-lint")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]


def test_cfn_lint_reports_nothing() -> None:
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    result = subprocess.run(
        [*_cfn_lint_command(), "--", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        env=env,
        cwd=TEMPLATE_PATH.parent,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"cfn-lint:\n{result.stdout}\n{result.stderr}"
