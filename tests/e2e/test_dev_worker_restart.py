"""`headrace dev` replaces a worker that dies, and Ctrl-C still stops every part of it.

The stack runs as a user starts it (`python -m headrace.cli.main dev`), in its own home.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.dev.stack import (
    RESTART_DELAY_MAX,
    RESTART_DELAY_MIN,
    STABLE_WORKER_SECONDS,
    WorkerSlot,
)
from tests.e2e.dev_process import (
    alive,
    api_once_started,
    children,
    headrace_dev,
    make_dev_home,
    wait_for,
    workers_of,
)


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


@pytest.fixture
def dev_home(tmp_path: Path, dev_model_dir: Path) -> Path:
    return make_dev_home(tmp_path / "home", dev_model_dir)


@pytest.fixture
def dev_stack(dev_home: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    output = tmp_path / "dev.log"
    with headrace_dev(dev_home, output) as process:
        yield process, output


def test_a_killed_worker_is_replaced_and_ctrl_c_stops_everything(
    dev_stack: tuple[subprocess.Popen[bytes], Path], dev_home: Path
) -> None:
    process, output = dev_stack
    state_file = dev_home / "dev-stack.json"
    api = api_once_started(process, output, dev_home)
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
