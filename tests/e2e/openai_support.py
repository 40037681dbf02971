"""What the OpenAI-compatible tests share: the dev model's rendering of their chat, a second
gateway on a running stack with settings of its own, and the streaming function's app."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from handlers import stream_app
from headrace.dev.moto import free_port, stop_process
from headrace.dev.stack import LocalStack
from infra.template import load_template

ROOT = Path(__file__).resolve().parents[2]

# The tests' chat as the dev model's template renders it (headrace/dev/model/build.py): the
# developer message as a system one, the text parts joined, the begin token left to the worker.
RENDERED_CHAT = "System: Be brief.\nUser: Tell of the mill.\nAssistant:"


@contextlib.contextmanager
def second_gateway(stack: LocalStack, home: Path) -> Iterator[str]:
    """A gateway on `stack`'s AWS endpoint (whose worker serves its jobs) that answers at once
    past no sync wait, with one more model, `headrace-plain`: a directory holding no chat
    template (the API reads nothing else of a model). Yields its base URL."""
    plain = home / "headrace-plain"
    plain.mkdir()
    zoo = {**stack.model_zoo, "headrace-plain": str(plain)}
    env = stack.env({"HEADRACE_MODEL_ZOO": json.dumps(zoo), "HEADRACE_SYNC_WAIT_SECONDS": "0"})
    port = free_port()
    command = [sys.executable, "-m", "headrace.cli.main", "gateway", "--port", str(port)]
    with (home / "gateway.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_it_answers(base_url + "/openapi.json", process)
        yield base_url
    finally:
        stop_process(process)


@contextlib.contextmanager
def function_app(stack: LocalStack, home: Path) -> Iterator[str]:
    """The streaming function's app on `stack`, started as the Lambda Web Adapter starts it (its
    handler script, the port in AWS_LWA_PORT). Yields its URL: the Function URL's stand-in."""
    function = load_template()["Resources"]["CompletionsStreamFunction"]["Properties"]
    port = free_port()
    env = stack.env(
        {
            "AWS_LWA_PORT": str(port),
            # The script runs `python3`: this interpreter, as the runtime's is on Lambda.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
    )
    with (home / "stream-app.log").open("ab") as log:
        process = subprocess.Popen(
            [str(ROOT / function["Handler"])], env=env, cwd=home, stdout=log, stderr=log
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_it_answers(base_url + stream_app.HEALTH_PATH, process)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def _wait_until_it_answers(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"it exited with {process.returncode}"
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            assert time.monotonic() < deadline, f"{url} did not answer within 30 s"
            time.sleep(0.05)
