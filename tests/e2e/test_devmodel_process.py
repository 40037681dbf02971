"""The dev model builders, checked in a fresh interpreter: a build does not depend on the
process, and importing them loads no engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.dev.model import artifact_digest, build_dev_model


@pytest.fixture(scope="module")
def dev_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dev_model(tmp_path_factory.mktemp("dev") / "model", seed=0)


def test_dev_build_is_deterministic(dev_model: Path, tmp_path: Path) -> None:
    # Rebuild in a fresh process with single-threaded BLAS and tokenizer training: the
    # bytes must not depend on the process (hash seeds) or on the thread count.
    code = (
        "import sys; from pathlib import Path; from headrace.dev.model import build_dev_model;"
        "build_dev_model(Path(sys.argv[1]), seed=0)"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again")], check=True, env=env)
    assert artifact_digest(tmp_path / "again") == artifact_digest(dev_model)
    other = build_dev_model(tmp_path / "other", seed=1)
    assert artifact_digest(other) != artifact_digest(dev_model)
    # The seed only perturbs the near-identity layers, never the tokenizer/vocabulary.
    for name in ("tokenizer.json", "vocabulary.json", "config.json"):
        assert (other / name).read_bytes() == (dev_model / name).read_bytes()


def test_import_does_not_load_ctranslate2() -> None:
    code = "import sys, headrace.dev.model; assert 'ctranslate2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
