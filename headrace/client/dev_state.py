"""Where a running `headrace dev` records itself, so a second terminal's client can find it.

The dev stack writes the file and the client reads it; both take the path from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HOME_ENV_VAR = "HEADRACE_HOME"
DEFAULT_HOME_DIR_NAME = ".headrace"  # under the user's home directory
STATE_FILE_NAME = "dev-stack.json"


def headrace_home() -> Path:
    """The dev stack's state, logs and models: $HEADRACE_HOME, else ~/.headrace."""
    return Path(os.environ.get(HOME_ENV_VAR) or Path.home() / DEFAULT_HOME_DIR_NAME)


def dev_state_path(home: Path | None = None) -> Path:
    return (home or headrace_home()) / STATE_FILE_NAME


def read_dev_state(home: Path | None = None) -> dict[str, Any]:
    """What a running `headrace dev` recorded (empty when there is none)."""
    try:
        state = json.loads(dev_state_path(home).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}
