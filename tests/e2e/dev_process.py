"""`headrace dev` as a user runs it, for the tests of the dev command: a home with the session's
dev model, the command started with its output in a file, and readers of its child processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import free_port
from tests.e2e.support import FAST_SETTINGS, Api

ROOT = Path(__file__).resolve().parents[2]


def make_dev_home(home: Path, dev_model_dir: Path) -> Path:
    """A home of its own, with the session's dev model in it (built once per session)."""
    models = home / "models"
    shutil.copytree(dev_model_dir, models / DEV_MODEL_NAME)
    stamp = dev_model_dir.with_suffix(".stamp")
    shutil.copy(stamp, models / stamp.name)
    return home


@contextmanager
def headrace_dev(
    home: Path, output: Path, *args: str, **settings: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`headrace dev ARGS` on a free port with the fast test settings (plus `settings`), its
    output in `output`; killed at the end of the block if it still runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env.update(FAST_SETTINGS, HEADRACE_HOME=str(home), **settings)
    command = [sys.executable, "-m", "headrace.cli.main", "dev", "--port", str(free_port())]
    with output.open("wb") as log:
        process = subprocess.Popen(
            [*command, *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def api_once_started(process: subprocess.Popen[bytes], output: Path, home: Path) -> Api:
    """The stack's API, once it has written its state file (its pid in it)."""
    state_file = home / "dev-stack.json"

    def started() -> bool:
        assert process.poll() is None, output.read_text()
        return state_file.is_file() and json.loads(state_file.read_text())["pid"] == process.pid

    wait_for("the stack started", started, 120)
    state = json.loads(state_file.read_text())
    return Api(state["base_url"], state["api_key"])


def children(pid: int) -> dict[int, str]:
    """pid -> command line of the live direct children of `pid`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = command
    return found


def workers_of(pid: int) -> list[int]:
    return [child for child, command in children(pid).items() if "-m worker" in command]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.1)
