"""Streaming over the WebSocket API, resuming a broken connection without gap or duplicate.

Protocol: send `{"action": "complete", "model", ...request}` (or `{"action": "subscribe",
"request_id", "from_seq"}`); the server answers a `WebSocketAck` and `StreamEvent` frames
numbered by `seq` from 0. Events may come before the ack. After a drop the client reconnects
and subscribes from the first seq it has not seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from headrace.client._config import ClientConfig
from headrace.client._http import new_session, unreachable
from headrace.client.errors import (
    CompletionTimeoutError,
    HeadraceClientError,
    HeadraceConnectionError,
    NotFoundError,
    ServerError,
    error_class,
    error_from_response,
)
from headrace.client.responses import CompletionStreamResponse
from headrace.core.contracts import WebSocketAck

if TYPE_CHECKING:
    import aiohttp

MAX_RECONNECTS = 5
GAP_TIMEOUT_SECONDS = 5.0  # a seq missing this long while later ones arrived: resubscribe
# The job was already final when we subscribed: its stored events are replayed at once, so
# silence this long means there is nothing after from_seq.
FINAL_GRACE_SECONDS = 1.0


class StreamTracker:
    """The pure part of a stream: which request it follows, what it has seen, what to yield."""

    def __init__(self, request_id: str | None = None, from_seq: int = 0) -> None:
        self.request_id = request_id
        self.next_seq = from_seq  # the first seq not yet handed out
        self.finished = False
        self.pending: dict[str, list[CompletionStreamResponse]] = {}  # before the ack
        self.ahead: dict[int, CompletionStreamResponse] = {}  # arrived before a missing seq
        self.job_was_final = False  # an ack said so: nothing live will follow the replay

    def on_frame(self, frame: Any) -> list[CompletionStreamResponse]:
        """The events to hand out for one frame; raises the error of a rejected request."""
        if not isinstance(frame, dict):
            raise ServerError(f"unexpected WebSocket frame: {frame!r:.200}")
        if frame.get("type") == "accepted":
            return self._on_ack(WebSocketAck.model_validate(frame))
        if "detail" in frame or frame.get("type") == "error":
            status = frame.get("status_code") or frame.get("statusCode") or 400
            raise error_from_response(int(status), frame)
        if "message" in frame and "seq" not in frame and "output" not in frame:
            # API Gateway's own answer, e.g. {"message": "Internal server error", ...}.
            raise ServerError(f"the WebSocket API answered: {frame['message']}", 500)
        try:
            event = CompletionStreamResponse.model_validate(frame)
        except ValidationError as e:
            raise ServerError(f"malformed stream event: {frame!r:.200}") from e
        if event.request_id is None:
            if event.error is not None:  # the request was rejected before it had an id
                error = event.error
                raise error_class(error.status_code)(error.content.error, error.status_code)
            return []
        if self.request_id is None:
            self.pending.setdefault(event.request_id, []).append(event)
            return []
        if event.request_id != self.request_id:
            return []
        return self._take(event)

    def _on_ack(self, ack: WebSocketAck) -> list[CompletionStreamResponse]:
        if self.request_id is None:
            self.request_id = ack.request_id
        if ack.request_id != self.request_id:
            return []
        self.job_was_final = self.job_was_final or ack.status.is_final
        out: list[CompletionStreamResponse] = []
        for event in self.pending.pop(self.request_id, []):
            out.extend(self._take(event))
        self.pending.clear()
        return out

    def receive_timeout(self, remaining: float) -> float:
        """How long to wait for the next frame, with `remaining` seconds left in all."""
        if self.ahead:
            return min(remaining, GAP_TIMEOUT_SECONDS)
        if self.job_was_final:
            return min(remaining, FINAL_GRACE_SECONDS)
        return remaining

    def adopt_pending(self) -> None:
        """No ack came but events did: they name the request to resume."""
        if self.request_id is None and len(self.pending) == 1:
            self.request_id = next(iter(self.pending))
            events = self.pending.pop(self.request_id)
            for event in events:
                if event.seq is not None and event.seq >= self.next_seq:
                    self.ahead.setdefault(event.seq, event)
            self._drain()

    def _take(self, event: CompletionStreamResponse) -> list[CompletionStreamResponse]:
        if self.finished:
            return []
        if event.seq is None:  # unnumbered: cannot be deduplicated, hand it out as it is
            self.finished = event.is_last
            return [event]
        if event.seq < self.next_seq or event.seq in self.ahead:
            return []  # seen already (a resumed stream replays from from_seq)
        self.ahead[event.seq] = event
        return self._drain()

    def _drain(self) -> list[CompletionStreamResponse]:
        out: list[CompletionStreamResponse] = []
        while not self.finished and self.next_seq in self.ahead:
            event = self.ahead.pop(self.next_seq)
            self.next_seq += 1
            self.finished = event.is_last
            out.append(event)
        if self.finished:
            self.ahead.clear()
        return out


async def stream_events(
    config: ClientConfig,
    *,
    complete: dict[str, Any] | None = None,
    request_id: str | None = None,
    from_seq: int = 0,
    time_limit: float = 300.0,
    max_reconnects: int = MAX_RECONNECTS,
) -> AsyncIterator[CompletionStreamResponse]:
    """Events of a new request (`complete`, the request fields and model) or of an existing one
    (`request_id`), until the finished or error event."""
    import aiohttp

    if (complete is None) == (request_id is None):
        raise ValueError("give either a request to complete or the request_id to follow")
    tracker = StreamTracker(request_id, from_seq)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    failures = 0
    sent_complete = False
    url = config.websocket_url()
    headers = {"x-api-key": config.api_key} if config.api_key else {}
    params = {"api_key": config.api_key} if config.api_key else None
    async with new_session() as session:
        while True:
            try:
                async with session.ws_connect(url, headers=headers, params=params) as ws:
                    if tracker.request_id is None:
                        sent_complete = True
                        await ws.send_json({"action": "complete", **(complete or {})})
                    else:
                        frame = {"action": "subscribe", "request_id": tracker.request_id}
                        await ws.send_json({**frame, "from_seq": tracker.next_seq})
                    while True:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            raise _timed_out(tracker, time_limit)
                        try:
                            message = await ws.receive(timeout=tracker.receive_timeout(remaining))
                        except TimeoutError:
                            if loop.time() >= deadline:
                                raise _timed_out(tracker, time_limit) from None
                            if tracker.ahead:
                                break  # a seq is missing: resubscribe from it
                            return  # a finished job, followed from past its last event
                        if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                            break  # closed or broken
                        for event in tracker.on_frame(_parse(message)):
                            failures = 0
                            yield event
                        if tracker.finished:
                            return
            except aiohttp.WSServerHandshakeError as e:
                error = _handshake_error(url, e)
                if e.status not in (429, 502, 503, 504):
                    raise error from None
                last_error: HeadraceClientError = error
            except aiohttp.ClientConnectorError as e:
                refused = isinstance(e.os_error, ConnectionRefusedError)
                last_error = unreachable(config.base_url, f"{url}: {e.os_error}", refused=refused)
            except (aiohttp.ClientError, ConnectionError) as e:
                last_error = HeadraceConnectionError(f"the WebSocket connection broke: {e!r}")
            else:
                last_error = HeadraceConnectionError("the WebSocket connection closed mid-stream")
            tracker.adopt_pending()
            failures += 1
            fatal = _error_ending_stream(
                tracker,
                last_error,
                # With an idempotency key, sending `complete` again cannot make a second job.
                sent_complete=sent_complete and not (complete or {}).get("idempotency_key"),
                failures=failures,
                max_reconnects=max_reconnects,
            )
            if fatal is not None:
                raise fatal
            pause = min(0.05 * 2 ** (failures - 1), 2.0, max(deadline - loop.time(), 0.0))
            await asyncio.sleep(pause)


def _error_ending_stream(
    tracker: StreamTracker,
    last_error: HeadraceClientError,
    *,
    sent_complete: bool,
    failures: int,
    max_reconnects: int,
) -> HeadraceClientError | None:
    """After a dropped connection: the error that ends the stream, or None to reconnect."""
    if tracker.request_id is None and sent_complete:
        return HeadraceConnectionError(
            "the WebSocket connection broke before the server acknowledged the request"
            f" ({last_error}); it may still run, but its request_id is unknown"
        )
    if failures <= max_reconnects:
        return None
    if tracker.request_id is not None:
        last_error.detail = (
            f"{last_error.detail}; gave up after {max_reconnects} reconnects. Resume"
            f" with Completion.stream_existing({tracker.request_id!r},"
            f" from_seq={tracker.next_seq})"
        )
        last_error.request_id = tracker.request_id
    return last_error


def _parse(message: aiohttp.WSMessage) -> Any:
    data = message.data
    try:
        return json.loads(data)
    except ValueError:
        raise ServerError(f"a WebSocket frame is not JSON: {data!r:.200}") from None


def _timed_out(tracker: StreamTracker, time_limit: float) -> CompletionTimeoutError:
    what = f"request {tracker.request_id}" if tracker.request_id else "the request"
    return CompletionTimeoutError(
        f"{what} did not finish streaming within {time_limit:g}s", request_id=tracker.request_id
    )


def _handshake_error(url: str, error: aiohttp.WSServerHandshakeError) -> HeadraceClientError:
    if error.status == 404:
        return NotFoundError(f"no WebSocket API at {url} (404): is streaming deployed?", 404)
    if error.status == 403:  # API Gateway's answer to a refused $connect
        return error_class(401)(f"the WebSocket API at {url} refused the API key (403)", 401)
    detail = f"the WebSocket API at {url} answered {error.status}: {error.message}"
    return error_class(error.status)(detail, error.status)
