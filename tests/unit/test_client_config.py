"""The client's configuration: defaults, the dev stack's state file, the environment, code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headrace.client import configure, current_config


def test_config_defaults_reach_the_local_stack(isolated_config: Path) -> None:
    config = current_config()
    assert config.base_url == "http://127.0.0.1:8080"
    assert config.websocket_url() == "ws://127.0.0.1:8080/ws"
    assert config.api_key is None and config.default_model == "headrace-tiny"


def test_config_from_the_dev_state_file(isolated_config: Path) -> None:
    state = {"base_url": "http://127.0.0.1:8123", "api_key": "hr-dev-k", "default_model": "m1",
             "ws_url": "ws://127.0.0.1:8123/socket"}  # fmt: skip
    (isolated_config / "dev-stack.json").write_text(json.dumps(state))
    config = current_config()
    assert (config.base_url, config.api_key, config.default_model) == (
        "http://127.0.0.1:8123", "hr-dev-k", "m1")  # fmt: skip
    assert config.websocket_url() == "ws://127.0.0.1:8123/socket"


def test_env_wins_over_the_state_file_and_code_over_env(
    isolated_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"base_url": "http://127.0.0.1:8123", "api_key": "hr-dev-k"}
    (isolated_config / "dev-stack.json").write_text(json.dumps(state))
    monkeypatch.setenv("HEADRACE_BASE_URL", "https://api.example.com/")
    config = current_config()
    # Another deployment: the recorded dev key is not sent to it.
    assert config.base_url == "https://api.example.com" and config.api_key is None
    assert config.websocket_url() == "wss://api.example.com/ws"
    monkeypatch.setenv("HEADRACE_API_KEY", "env-key")
    monkeypatch.setenv("HEADRACE_WS_URL", "wss://ws.example.com/prod")
    assert current_config().api_key == "env-key"
    assert current_config().websocket_url() == "wss://ws.example.com/prod"
    configure(base_url="http://127.0.0.1:8123", api_key="code-key")
    assert current_config().base_url == "http://127.0.0.1:8123"
    assert current_config().api_key == "code-key"
