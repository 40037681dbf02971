"""One webhook POST: to the address the URL check passed (not a fresh lookup), with connect and
read timeouts, no redirect followed, at most 1 KB of the answer kept."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from headrace.api.webhook_urls import CallbackTarget

KEPT_ANSWER_BYTES = 1024
USER_AGENT = "Headrace-Webhooks/1"


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    latency_ms: float
    error: str | None
    body: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """A timeout, no connection, a 5xx or a 429: the receiver may take it later. Any other
        answer (a 4xx, a redirect) will not change by sending again."""
        if self.status_code is None:
            return True
        return self.status_code >= 500 or self.status_code == 429


def _connection(
    target: CallbackTarget, *, connect_timeout: float, read_timeout: float
) -> http.client.HTTPConnection:
    def pinned(address: Any, timeout: Any, source_address: Any = None) -> socket.socket:
        sock = socket.create_connection((target.address, target.port), connect_timeout)
        sock.settimeout(read_timeout)
        return sock

    connection: http.client.HTTPConnection
    if target.scheme == "https":
        # The certificate is checked against the URL's host name (SNI too), not the address.
        context = ssl.create_default_context()
        connection = http.client.HTTPSConnection(target.host, target.port, context=context)
    else:
        connection = http.client.HTTPConnection(target.host, target.port)
    connection._create_connection = pinned  # type: ignore[attr-defined]
    return connection


def post(
    target: CallbackTarget,
    body: bytes,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> PostResult:
    started = time.monotonic()
    connection = _connection(target, connect_timeout=connect_timeout, read_timeout=read_timeout)
    try:
        connection.request(
            "POST",
            target.target,
            body=body,
            headers={
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                **headers,
            },
        )
        response = connection.getresponse()
        kept = response.read(KEPT_ANSWER_BYTES).decode("utf-8", errors="replace")
        status = response.status
    except TimeoutError:
        return PostResult(None, _ms(started), "timed out", None)
    except (OSError, http.client.HTTPException) as e:
        return PostResult(None, _ms(started), f"no answer: {type(e).__name__}: {e}", None)
    finally:
        connection.close()
    error = None
    if 300 <= status < 400:
        error = f"answered {status}: redirects are not followed"
    elif not 200 <= status < 300:
        error = f"answered {status}"
    return PostResult(status, _ms(started), error, kept)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
