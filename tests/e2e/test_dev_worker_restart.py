"""`headrace dev` replaces a worker that dies, and Ctrl-C still stops every part of it.

The stack runs as a user starts it (`python -m headrace.cli.main dev`), in its own home.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import free_port
from headrace.dev.stack import (
    RESTART_DELAY_MAX,
    RESTART_DELAY_MIN,
    STABLE_WORKER_SECONDS,
    WorkerSlot,
)
from tests.e2e.support import FAST_SETTINGS, Api

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_that_keeps_dying_at_start_waits_longer_each_time() -> None:
    slot = WorkerSlot(None, started_at=0.0)
    delays = []
    for _ in range(8):
        delays.append(slot.restart_delay(now=slot.started_at + 2))
        slot.started_at += 100
    assert delays[0] == RESTART_DELAY_MIN
    assert delays == sorted(delays) and delays[-1] == RESTART_DELAY_MAX
    # One that served a while is replaced at once, and the count starts over.
    assert slot.restart_delay(now=slot.started_at + STABLE_WORKER_SECONDS) == 0
    assert slot.restart_delay(now=slot.started_at + 1) == RESTART_DELAY_MIN


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


@pytest.fixture
def dev_home(tmp_path: Path, dev_model_dir: Path) -> Path:
    """A home of its own, with the session's dev model in it (built once per session)."""
    home = tmp_path / "home"
    models = home / "models"
    shutil.copytree(dev_model_dir, models / DEV_MODEL_NAME)
    stamp = dev_model_dir.with_suffix(".stamp")
    shutil.copy(stamp, models / stamp.name)
    return home


@pytest.fixture
def dev_stack(dev_home: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    env.update(FAST_SETTINGS, HEADRACE_HOME=str(dev_home))
    output = tmp_path / "dev.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli.main", "dev", "--port", str(free_port())],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_killed_worker_is_replaced_and_ctrl_c_stops_everything(
    dev_stack: tuple[subprocess.Popen[bytes], Path], dev_home: Path
) -> None:
    process, output = dev_stack
    state_file = dev_home / "dev-stack.json"

    def started() -> bool:
        assert process.poll() is None, output.read_text()
        return state_file.is_file() and json.loads(state_file.read_text())["pid"] == process.pid

    wait_for("the stack started", started, 120)
    state = json.loads(state_file.read_text())
    api = Api(state["base_url"], state["api_key"])
    [first] = workers_of(process.pid)

    os.kill(first, signal.SIGKILL)
    # Submit once the new worker is ready: a job sent before could go to the long poll the dead
    # one left in flight (as on SQS), and be served only after its visibility timeout.
    wait_for("a new worker", lambda: output.read_text().count('"worker ready"') == 2, 60)
    request_id = api.submit({"prompt": "The river", "max_new_tokens": 8, "temperature": 0})
    job = api.wait(request_id, timeout=90)
    assert job["status"] == "SUCCEEDED", job
    [second] = workers_of(process.pid)
    assert second != first
    log = output.read_text()
    assert "worker-1 exited with status -9" in log, log
    assert process.poll() is None, "the stack stopped with its worker"

    parts = list(children(process.pid))
    # The AWS endpoint, the gateway, the event source mappings and the worker.
    assert len(parts) == 4, children(process.pid)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, output.read_text()
    assert not [pid for pid in parts if alive(pid)]
    assert not state_file.exists()
