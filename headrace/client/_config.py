"""Where the client sends requests: set in code, else the environment, else the local stack.

Order, for each value: `configure(...)`, then `HEADRACE_BASE_URL`, `HEADRACE_WS_URL`,
`HEADRACE_API_KEY`, `HEADRACE_DEFAULT_MODEL`, then what a running `headrace dev` recorded in
`$HEADRACE_HOME/dev-stack.json` (default `~/.headrace`), then `http://127.0.0.1:8080`.

The recorded api_key, ws_url and default_model are used only while the base URL is the recorded
one, so pointing the client at another deployment never sends it the local dev key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from headrace.client.dev_state import read_dev_state

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
DEFAULT_MODEL = "headrace-tiny"


@dataclass(frozen=True)
class ClientConfig:
    base_url: str = DEFAULT_BASE_URL
    ws_url: str | None = None  # None: derived from base_url (ws://host/ws)
    api_key: str | None = None
    default_model: str = DEFAULT_MODEL

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        url = self.base_url.rstrip("/") + path
        return f"{url}?{urlencode(query)}" if query else url

    def websocket_url(self) -> str:
        if self.ws_url:
            return self.ws_url
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))

    def headers(self) -> dict[str, str]:
        headers = {"accept": "application/json", "user-agent": "headrace-client"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers


_overrides: dict[str, str | None] = {}


def configure(
    *,
    base_url: str | None = None,
    ws_url: str | None = None,
    api_key: str | None = None,
    default_model: str | None = None,
) -> ClientConfig:
    """Set client settings in code (arguments left None keep their current source)."""
    given = {
        "base_url": base_url,
        "ws_url": ws_url,
        "api_key": api_key,
        "default_model": default_model,
    }
    _overrides.update({k: v for k, v in given.items() if v is not None})
    return current_config()


def reset_configuration() -> None:
    """Forget what `configure` set: back to the environment and the local stack."""
    _overrides.clear()


def current_config() -> ClientConfig:
    env = os.environ
    state = read_dev_state()
    state_base = _str(state.get("base_url"))
    base_url = _overrides.get("base_url") or env.get("HEADRACE_BASE_URL") or state_base
    base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    same_stack = state_base is not None and state_base.rstrip("/") == base_url
    recorded = state if same_stack else {}

    def pick(name: str, env_name: str) -> str | None:
        return _overrides.get(name) or env.get(env_name) or _str(recorded.get(name))

    config = ClientConfig(base_url=base_url)
    return replace(
        config,
        ws_url=pick("ws_url", "HEADRACE_WS_URL"),
        api_key=pick("api_key", "HEADRACE_API_KEY"),
        default_model=pick("default_model", "HEADRACE_DEFAULT_MODEL") or DEFAULT_MODEL,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
