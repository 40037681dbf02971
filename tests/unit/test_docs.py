"""The README says what the code does: every setting documented, CI runs the README's command."""

from __future__ import annotations

import re
from pathlib import Path

from headrace.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `(HEADRACE_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    declared = {f"HEADRACE_{name.upper()}" for name in Settings.model_fields}
    assert documented == declared


def test_ci_runs_the_readmes_test_command() -> None:
    ci_commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_commands == ["make test"]
    assert re.search(r"^make test\s+#", README, flags=re.MULTILINE)
    assert re.search(r"^make dev\s+#", README, flags=re.MULTILINE)
