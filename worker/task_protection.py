"""ECS task scale-in protection while the worker holds jobs.

Scale-in stops the tasks ECS picks, and a stopped worker can only hand its jobs back (they start
over elsewhere). So while this worker holds any job it asks the ECS container agent to protect
its task (`PUT $ECS_AGENT_URI/task-protection/v1/state`), renews that before it lapses, and
clears it once it has been idle for a while: not one call per job, since a busy worker goes
idle and busy again between jobs. A protection that lapses (a frozen worker stops renewing)
makes the task fair game again, which is what a frozen worker deserves.

Without ECS_AGENT_URI (not on ECS) nothing is asked. A failed call is logged and tried again
later; it never stops the worker: an unprotected worker still finishes or hands back its jobs
when stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

logger = logging.getLogger("headrace.worker")

PATH = "/task-protection/v1/state"
RETRY_SECONDS = 5.0  # after a failed call
CALL_TIMEOUT_SECONDS = 5.0

# (enabled, expires in minutes or None) -> whether the agent did it
Send = Callable[[bool, int | None], Awaitable[bool]]


class TaskProtection:
    def __init__(
        self,
        send: Send,
        *,
        expires_minutes: int,
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.expires_minutes = expires_minutes
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.protected = False
        self._busy = False
        self._idle_since = clock()
        self._renew_at = 0.0
        self._changed = asyncio.Event()

    def load(self, jobs_held: int) -> None:
        """Called whenever the number of jobs the worker holds changes."""
        busy = jobs_held > 0
        if busy == self._busy:
            return
        self._busy = busy
        if not busy:
            self._idle_since = self.clock()
        self._changed.set()

    async def run(self) -> None:
        """Keep the protection in step with the load, until cancelled."""
        while True:
            wait = await self.step()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def step(self) -> float | None:
        """Make one call if one is due; how long until the next may be (None: a change)."""
        now = self.clock()
        if self._busy:
            if self.protected and now < self._renew_at:
                return self._renew_at - now
            if not await self.send(True, self.expires_minutes):
                return RETRY_SECONDS
            self.protected = True
            # Renew at half the protection's life: a slow or failed renewal still has time.
            self._renew_at = self.clock() + self.expires_minutes * 60 / 2
            return self._renew_at - self.clock()
        if not self.protected:
            return None
        clear_at = self._idle_since + self.idle_seconds
        if now < clear_at:
            return clear_at - now
        if not await self.send(False, None):
            return RETRY_SECONDS
        self.protected = False
        return None

    async def clear(self) -> None:
        """At shutdown: drop the protection now if it is held."""
        if self.protected and await self.send(False, None):
            self.protected = False


class AgentEndpoint:
    """The container agent's task-protection endpoint, over one aiohttp session."""

    def __init__(self, agent_uri: str, session: aiohttp.ClientSession) -> None:
        self.url = agent_uri.rstrip("/") + PATH
        self.session = session

    async def send(self, enabled: bool, expires_minutes: int | None) -> bool:
        body: dict[str, Any] = {"ProtectionEnabled": enabled}
        if expires_minutes is not None:
            body["ExpiresInMinutes"] = expires_minutes
        try:
            async with self.session.put(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)
            ) as response:
                answer = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            logger.warning("task protection: the ECS agent did not answer: %r", e)
            return False
        # The agent answers {"protection": {...}}, or {"failure": {...}} / {"error": {...}}.
        done = isinstance(answer, dict) and "protection" in answer
        if status >= 300 or not done or answer.get("failure") or answer.get("error"):
            logger.warning(
                "task protection: the ECS agent refused",
                extra={"status": status, "answer": answer, "protection_enabled": enabled},
            )
            return False
        logger.info(
            "task protection set" if enabled else "task protection cleared",
            extra={"expires_in_minutes": expires_minutes},
        )
        return True
