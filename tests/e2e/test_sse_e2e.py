"""LLM Engine's SSE route with a plain HTTP client reading `data:` lines."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.support import Api, log_lines, make_stack

PATH = f"/v1/llm/completions-stream?model_endpoint_name={DEV_MODEL_NAME}"


def post_stream(stack: LocalStack, body: Any, key: str | None = None) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        stack.base_url + PATH,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": key or stack.api_key, "content-type": "application/json"},
    )
    events = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            else:
                assert line == "", line  # data-only events separated by blank lines
    return events


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_sse_events_concatenate_to_the_stored_text(
    api: Api, stack: LocalStack, temperature: float
) -> None:
    events = post_stream(
        stack, {"prompt": "日本語 and the river", "max_new_tokens": 200, "temperature": temperature}
    )
    request_id = events[0]["request_id"]
    stored = api.wait(request_id)["output"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert "".join(e["output"]["text"] for e in events) == stored["text"]
    assert events[-1]["output"]["finished"] is True
    assert events[-1]["output"]["num_completion_tokens"] == stored["num_completion_tokens"]


def test_sse_bad_input_is_a_plain_http_error(stack: LocalStack) -> None:
    for body, key, status in [
        ({"prompt": "x", "temperature": 7}, None, 400),
        ({"prompt": "x"}, "wrong-key", 401),
    ]:
        with pytest.raises(urllib.error.HTTPError) as raised:
            post_stream(stack, body, key)
        assert raised.value.code == status
        assert json.loads(raised.value.read())["detail"]
        raised.value.close()


def test_a_stream_whose_client_has_gone_stops_following_at_once(
    model_home: Path, tmp_path: Path
) -> None:
    # No worker: the job stays queued and the stream has no event to write, so only watching
    # the connection can notice that its client left.
    with make_stack(model_home, tmp_path, workers=0) as stack:
        body = json.dumps({"prompt": "The wheel", "max_new_tokens": 8})
        raw = (
            f"POST {PATH} HTTP/1.1\r\nhost: test\r\nx-api-key: {stack.api_key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
        ).encode()
        parts = urllib.parse.urlsplit(stack.base_url)
        with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
            sock.sendall(raw)
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received
        left_at = time.monotonic()
        request_id = received.split(b"x-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
        gateway_log = stack.logs_dir / "gateway.log"

        def stopped() -> bool:
            lines = log_lines(gateway_log, request_id)
            return any("client went away" in line["message"] for line in lines)

        while not stopped():
            assert time.monotonic() - left_at < 5, "the stream went on after its client left"
            time.sleep(0.05)
        assert "Traceback" not in gateway_log.read_text()
