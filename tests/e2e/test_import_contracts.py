"""`make lint` fails on an import across the layers: lint-imports, run on a copy of the code with
one forbidden import added, names the contract it breaks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
HANDLERS_CONTRACT = "Lambda handlers import the API services and the core only"
WORKER_CONTRACT = "The worker imports the core only"
IMPORT_LINTER = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The packages lint-imports checks, and pyproject.toml with its contracts."""
    for package in ("headrace", "handlers", "worker", "infra"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Wide lines: a long contract name is not wrapped in the report.
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_code_keeps_every_contract(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    every_one_kept = rf"Contracts: {len(IMPORT_LINTER['contracts'])} kept, 0 broken\."
    assert re.search(every_one_kept, result.stdout), result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "contract"),
    [
        ("handlers/status.py", "headrace.client", HANDLERS_CONTRACT),
        ("worker/engine.py", "headrace.api", WORKER_CONTRACT),
    ],
)
def test_a_forbidden_import_fails_naming_the_contract(
    copy: Path, module: str, forbidden: str, contract: str
) -> None:
    with (copy / module).open("a") as source:
        source.write(f"import {forbidden}  # noqa: F401\n")
    result = lint_imports(copy)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {forbidden}" in broken, result.stdout
