"""`headrace dev --max-workers N`: no worker while idle, one as soon as a job waits, a dead one
replaced, idle ones stopped after the scale-in wait.

The stack runs as a user starts it, in its own home, with workers that clear their task
protection one second after going idle (the autoscaler leaves a protected worker alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.dev_process import (
    alive,
    api_once_started,
    children,
    headrace_dev,
    make_dev_home,
    wait_for,
    workers_of,
)
from tests.e2e.support import log_lines

# Seconds of an empty queue before a scale-in. The killed worker's replacement must start
# within them (after the autoscaler's 1 s hold for a worker that died young), or the rule no
# longer wants a worker: 5 s leave that margin on a busy machine.
SCALE_IN_AFTER = 5


@pytest.fixture
def dev_home(tmp_path: Path, dev_model_dir: Path) -> Path:
    return make_dev_home(tmp_path / "home", dev_model_dir)


@pytest.fixture
def autoscaled(dev_home: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    output = tmp_path / "dev.log"
    scaling = ["--max-workers", "2", "--scale-in-after", str(SCALE_IN_AFTER)]
    with headrace_dev(
        dev_home, output, *scaling, HEADRACE_TASK_PROTECTION_IDLE_SECONDS="1"
    ) as process:
        yield process, output


def test_from_zero_workers_to_a_completion_and_back_to_zero(
    autoscaled: tuple[subprocess.Popen[bytes], Path], dev_home: Path
) -> None:
    process, output = autoscaled
    api = api_once_started(process, output, dev_home)
    assert workers_of(process.pid) == []  # idle: no worker

    request_id = api.submit({"prompt": "The river", "max_new_tokens": 8, "temperature": 0})
    status, job = api.call("GET", f"/v1/llm/completions/{request_id}")
    assert status == 200 and job["status"] == "QUEUED", job
    assert job["capacity"]["state"] == "scaling_from_zero", job
    assert api.wait(request_id, timeout=90)["status"] == "SUCCEEDED"

    def succeeded() -> list[dict[str, Any]]:  # logged just after the result is stored
        lines = log_lines(output, request_id)
        return [line for line in lines if line["message"] == "job succeeded"]

    wait_for("the worker's log of the job", lambda: bool(succeeded()), 10)
    [logged] = succeeded()
    first_token_ms = logged["submit_to_first_token_ms"]
    print(f"submit to first token from zero workers: {first_token_ms / 1000:.2f} s")
    assert first_token_ms < 60_000
    [first] = workers_of(process.pid)

    # Killed while the rule still wants it: a new one takes its place.
    os.kill(first, signal.SIGKILL)
    wait_for("a new worker", lambda: workers_of(process.pid) not in ([], [first]), 30)
    [second] = workers_of(process.pid)
    log = output.read_text()
    assert "worker-1 exited with status -9" in log, log

    # Idle for the scale-in wait: stopped with SIGTERM (status 0), and none started again.
    stopped = "worker-2 stopped with status 0"  # logged once the autoscaler reaped it
    wait_for("scale-in to zero", lambda: stopped in output.read_text(), SCALE_IN_AFTER + 30)
    assert workers_of(process.pid) == [] and not alive(second)
    log = output.read_text()
    assert "scaling 1 -> 0 workers" in log, log
    time.sleep(1.5)  # three more looks of the autoscaler: still nothing to run
    assert workers_of(process.pid) == []

    parts = list(children(process.pid))
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, output.read_text()
    assert not [pid for pid in parts if alive(pid)]
