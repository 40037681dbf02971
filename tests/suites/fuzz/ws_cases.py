"""WebSocket frames to fuzz with, and a raw client for connections that drop mid-way."""

from __future__ import annotations

import json
import os
import socket
import struct
import urllib.parse
from typing import Any

from headrace.dev.model import DEV_MODEL_NAME
from tests.suites.fuzz.http_cases import NESTING, VOCABULARY_SIZE, nested_array, nested_object

TEXT, BINARY = 0x1, 0x2
# A frame: text (sent as a text frame), bytes (a binary frame) or (bytes, TEXT) (a text frame
# whose bytes need not be UTF-8).
Frame = str | bytes | tuple[bytes, int]
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


def complete(**fields: Any) -> str:
    return json.dumps(
        {"action": "complete", "model": DEV_MODEL_NAME, "max_new_tokens": 4, **fields}
    )


def subscribe(request_id: Any, **fields: Any) -> str:
    return json.dumps({"action": "subscribe", "request_id": request_id, **fields})


def malformed_frames() -> list[tuple[str, Frame]]:
    """Each must get an answer (an error event, or an ack) and leave the connection usable."""
    return [
        ("not JSON", "hello"),
        ("empty text frame", ""),
        ("truncated JSON", '{"action": "complete", "prompt": '),
        ("JSON array", "[]"),
        ("JSON null", "null"),
        ("JSON number", "42"),
        ("JSON string", '"complete"'),
        ("action a number", '{"action": 5}'),
        ("action null", '{"action": null}'),
        ("action an object", '{"action": {"a": 1}}'),
        ("unknown action", '{"action": "delete"}'),
        ("complete without prompt", '{"action": "complete"}'),
        ("complete, prompt a list", complete(prompt=["a", "b"])),
        ("complete, max_new_tokens -1", complete(prompt="x", max_new_tokens=-1)),
        ("complete, max_new_tokens a string", complete(prompt="x", max_new_tokens="ten")),
        ("complete, temperature NaN", _with_raw(complete(prompt="x"), "temperature", "NaN")),
        ("complete, unknown field", complete(prompt="x", colour="red")),
        ("complete, unknown model", complete(prompt="x", model="no-such-model")),
        ("subscribe without request_id", '{"action": "subscribe"}'),
        ("subscribe, from_seq -1", subscribe(UNKNOWN_ID, from_seq=-1)),
        ("subscribe, from_seq 2**63", subscribe(UNKNOWN_ID, from_seq=2**63)),
        ("subscribe, from_seq a string", subscribe(UNKNOWN_ID, from_seq="a")),
        ("subscribe, request_id 10 KB", subscribe("a" * 10_000)),
        ("subscribe, request_id with a newline", subscribe("abc\ndef")),
        ("subscribe, request_id with %0A", subscribe("abc%0Adef")),
        ("subscribe, request_id a number", subscribe(12)),
        ("subscribe, unknown request_id", subscribe(UNKNOWN_ID)),
        ("duplicate action keys", '{"action": "subscribe", "action": "nope"}'),
        ("binary frame, not UTF-8", b"\xff\xfe\x00\x01"),
        ("binary frame, valid JSON", subscribe(UNKNOWN_ID).encode()),
        ("nested 1,100 deep (array)", nested_array(NESTING)),
        ("nested 1,100 deep (object)", nested_object(NESTING)),
        (
            "complete, guided_json nested 1,100 deep",
            _with_raw(complete(prompt="x"), "guided_json", nested_object(NESTING)),
        ),
        (
            "complete, prompt nested 1,100 deep",
            _with_raw('{"action": "complete"}', "prompt", nested_array(NESTING)),
        ),
        ("complete, prompt of 127 KB (frame under 128 KB)", complete(prompt="a" * 127_000)),
    ]


def closing_frames() -> list[tuple[str, Frame]]:
    """Frames a server may answer by closing (API Gateway closes with 1009 over 128 KB): an
    error event or a close code both count as an answer here."""
    return [
        ("text frame, not UTF-8", (b"\xff\xfe\xc3\x28", TEXT)),
        ("frame of 129 KB (over 128 KB)", complete(prompt="a" * 129 * 1024)),
        ("frame of 1.1 MB (over 1 MB)", complete(prompt="a" * 1_100_000)),
    ]


def job_frames() -> list[tuple[str, str]]:
    """Valid jobs with extreme values: each must stream to a finished event."""
    prompt = ("The river turns the wheel. " * 2400)[:64_000]
    return [
        ("complete, top_k 2**63-1", complete(prompt="The mill", top_k=2**63 - 1, temperature=0.5)),
        (
            f"complete, top_k {VOCABULARY_SIZE + 1} (above the vocabulary)",
            complete(prompt="The mill", top_k=VOCABULARY_SIZE + 1, temperature=0.5),
        ),
        ("complete, top_p 5e-324", complete(prompt="The mill", top_p=5e-324, temperature=0.5)),
        ("complete, prompt of 64,000 bytes", complete(prompt=prompt)),
    ]


def _with_raw(frame: str, name: str, raw_json: str) -> str:
    """frame (a JSON object) with one more field whose value is raw JSON text."""
    return frame[:-1] + f', "{name}": {raw_json}}}'


# ---- a raw client, for connections that end without a closing handshake --------------------


def raw_connect(ws_url: str, api_key: str, timeout: float = 10.0) -> socket.socket:
    """A WebSocket handshake on a plain socket; raises OSError unless it answers 101."""
    parts = urllib.parse.urlsplit(ws_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout)
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nx-api-key: {api_key}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise OSError(f"handshake answered {head[:40]!r}")
    return sock


def masked_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A client frame (clients must mask) carrying payload in one piece."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def reset(sock: socket.socket) -> None:
    """Drop the connection with a TCP reset: no close frame, no FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
