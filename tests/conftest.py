"""Fixtures both kinds of tests share: the dev model, built once per session, and a client
configuration that sees nothing of the machine's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.client import reset_configuration
from headrace.dev.stack import ensure_dev_model

CLIENT_ENV = ("HEADRACE_BASE_URL", "HEADRACE_WS_URL", "HEADRACE_API_KEY", "HEADRACE_DEFAULT_MODEL")


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One HEADRACE_HOME per test session, so the dev model is built once for all stacks."""
    return tmp_path_factory.mktemp("headrace-home")


@pytest.fixture(scope="session")
def dev_model_dir(model_home: Path) -> Path:
    return ensure_dev_model(model_home)


@pytest.fixture
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No dev-stack.json of the machine, no HEADRACE_* client settings, no configure() left."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HEADRACE_HOME", str(home))
    for name in CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_configuration()
    yield home
    reset_configuration()
