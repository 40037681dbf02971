"""requirements.txt holds what the Lambda functions need: every distribution that importing the
template's handlers loads is listed there, or is a dependency of one that is."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from infra.template import TEMPLATE_PATH

ROOT = Path(__file__).resolve().parents[2]
# The project itself ships as source (CodeUri is the repository root); setuptools only shows
# up through the editable install's import hook.
NOT_PACKAGED = {"headrace", "setuptools"}
LOADED = (
    "import importlib, importlib.metadata as md, json, sys\n"
    "for name in sys.argv[1:]: importlib.import_module(name)\n"
    "tops = {m.split('.')[0] for m in sys.modules}\n"
    "found = md.packages_distributions()\n"
    "print(json.dumps(sorted({d for t in tops for d in found.get(t, [])})))"
)


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _with_dependencies(names: set[str]) -> set[str]:
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python, not installed here
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(_name(requirement))
    return seen


def test_every_distribution_a_handler_loads_is_in_requirements_txt() -> None:
    modules = sorted(
        {
            h.removesuffix(".sh").replace("/", ".") if h.endswith(".sh") else h.rsplit(".", 1)[0]
            for h in re.findall(r"Handler: (handlers\S+)", TEMPLATE_PATH.read_text())
        }
    )
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    needed = {_name(d) for d in json.loads(loaded.stdout)} - NOT_PACKAGED
    listed = {
        _name(line)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert needed <= _with_dependencies(listed), sorted(needed - _with_dependencies(listed))
