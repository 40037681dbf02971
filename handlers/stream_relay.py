"""Relaying a job's stream to an HTTP client until it ends or the client leaves: the one piece
both streaming apps (LLM Engine's route, handlers/stream_app.py; OpenAI's, handlers/
openai_stream_app.py) share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from headrace.core.logs import request_context

logger = logging.getLogger("headrace.stream")

# A stream ends (an error event: subscribe again to resume) before the function's 15 minutes.
STREAM_SECONDS = 870.0
_CLIENT_CHECK_SECONDS = 0.1


async def relay(
    request: web.Request,
    frames: AsyncIterator[bytes],
    *,
    headers: Mapping[str, str],
    request_id: str,
) -> web.StreamResponse:
    """Write every frame, then end the response; stop at once if the client goes away (the
    job goes on)."""
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    with request_context(request_id):
        writing = asyncio.create_task(_write_all(frames, response))
        if await _until_done_or_gone(request, writing):
            await response.write_eof()
        else:
            logger.info("stream client went away; stopped following the job, which goes on")
    return response


async def _write_all(frames: AsyncIterator[bytes], response: web.StreamResponse) -> None:
    async for frame in frames:
        await response.write(frame)


async def _until_done_or_gone(request: web.Request, writing: asyncio.Task[None]) -> bool:
    """True when every frame was written; False (the writing cancelled) once the client has
    gone. Between events the writing only polls storage, so a write would notice a closed
    connection only at the next event; the transport says so at once."""
    while True:
        done, _ = await asyncio.wait({writing}, timeout=_CLIENT_CHECK_SECONDS)
        if done:
            try:
                writing.result()
            except ConnectionResetError:
                return False
            return True
        transport = request.transport
        if transport is None or transport.is_closing():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await writing
            return False
