"""Client-side CLI commands (complete, submit, status). Registered by headrace.cli."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the client commands to the `headrace` parser."""
