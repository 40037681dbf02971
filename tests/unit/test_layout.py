"""The layout limits: no module over 400 lines, no function over 80 (a module past 400 lines is
probably two; a function past 80, several)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("headrace", "handlers", "worker", "infra", "bench", "tests")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def python_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_there_are_modules_to_check() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in python_files()}
    assert {"handlers/http.py", "worker/engine.py", "tests/unit/test_layout.py"} <= names


def test_no_module_is_over_400_lines() -> None:
    too_long = {
        path.relative_to(ROOT).as_posix(): lines
        for path in python_files()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_function_is_over_80_lines() -> None:
    too_long: dict[str, int] = {}
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    where = f"{path.relative_to(ROOT).as_posix()}:{node.lineno} {node.name}"
                    too_long[where] = lines
    assert too_long == {}
