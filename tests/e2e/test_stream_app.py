"""The streaming function's program, started as the Lambda Web Adapter starts it (its handler
script, the port in AWS_LWA_PORT), serves the same stream as the local gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers import stream_app
from headrace.dev.moto import free_port
from headrace.dev.stack import LocalStack
from infra.template import load_template
from tests.e2e.lease_support import wait_until
from tests.e2e.support import Api
from tests.e2e.test_sse_e2e import PATH

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def function_url(stack: LocalStack, tmp_path: Path) -> Iterator[str]:
    """The app on a port of its own, as the function runs it; its URL."""
    handler = load_template()["Resources"]["CompletionsStreamFunction"]["Properties"]["Handler"]
    port = free_port()
    env = stack.env(
        {
            "AWS_LWA_PORT": str(port),
            # The script runs `python3`: this interpreter, as the runtime's is on Lambda.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
    )
    with (tmp_path / "stream-app.log").open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / handler)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "stream-app.log").read_text()
        try:
            with urllib.request.urlopen(base + stream_app.HEALTH_PATH, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, 30, "the stream app's readiness check")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, (tmp_path / "stream-app.log").read_text()


def stream(base: str, body: object, key: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        base + PATH,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = response.read().decode().split("\n\n")
    assert frames[-1] == ""
    return [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]


def test_the_function_streams_what_the_worker_stores(
    function_url: str, stack: LocalStack, api: Api
) -> None:
    events = stream(function_url, {"prompt": "The river", "max_new_tokens": 24}, stack.api_key)
    stored = api.wait(str(events[0]["request_id"]))["output"]
    assert "".join(e["output"]["text"] for e in events) == stored["text"]
    assert events[-1]["output"]["finished"] is True

    with pytest.raises(urllib.error.HTTPError) as refused:
        stream(function_url, {"prompt": "The river"}, "not-a-key")
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["detail"]
    refused.value.close()
