"""Receiving: long polls while the worker has room, one task per message, drained at shutdown.

Prefetch is bounded: the worker holds what its models' schedulers may hold (running or
waiting), and no more, so other workers are not starved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from headrace.core.aws_calls import TRANSIENT_ERRORS
from headrace.core.contracts import JobMessage
from worker.job_queue import MessageQueue
from worker.scheduler import Arrival, ModelRunner

logger = logging.getLogger("headrace.worker")

# (message, its job or why it is not one, its arrival at the model's scheduler, received at)
Handler = Callable[
    [dict[str, Any], JobMessage | ValidationError, Arrival | None, float],
    Coroutine[Any, Any, None],
]


class Intake:
    def __init__(
        self,
        queue: MessageQueue,
        runners: dict[str, ModelRunner],
        handle: Handler,
        *,
        receive_wait_seconds: int,
        clock: Callable[[], float],
        on_load: Callable[[int], None] | None = None,
    ) -> None:
        self.queue = queue
        self.runners = runners
        self.handle = handle
        self.receive_wait_seconds = receive_wait_seconds
        self.clock = clock
        self.on_load = on_load  # told the number of messages held whenever it changes
        self.capacity = sum(r.prefetch for r in runners.values())
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._receiving: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._receiving = asyncio.create_task(self._receive_loop(), name="receive")

    async def stop(self, *, grace: float) -> None:
        """Receive no more; give the messages in hand until `grace` seconds from now (from the
        SIGTERM, whatever the long poll in flight takes: the task's stop timeout counts from
        there too), then cancel them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Let a long poll in flight return rather than cancel it: a cancelled poll may still
        # take messages server-side, which then stay invisible for a whole timeout.
        self._stopping = True
        self._slot_freed.set()
        if self._receiving is not None:
            try:
                await asyncio.wait_for(self._receiving, self.receive_wait_seconds + 5)
            except TimeoutError:
                self._receiving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._receiving
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(0.0, deadline - loop.time()))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _receive_loop(self) -> None:
        while not self._stopping:
            free = self.capacity - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                messages = await self.queue.receive(
                    max_messages=free, wait_seconds=self.receive_wait_seconds
                )
            except TRANSIENT_ERRORS as e:
                logger.warning("receive failed, backing off: %s", e.detail)
                await asyncio.sleep(1.0)
                continue
            if self._stopping:
                for message in messages:  # received as we stopped: straight back to the queue
                    await self.queue.set_visibility(message["ReceiptHandle"], 0)
                return
            for message in messages:
                self._accept(message)
            self._set_intake_full(len(self._tasks) >= self.capacity)

    def _accept(self, message: dict[str, Any]) -> None:
        """Start a received message's task. Its job counts as on its way to the model's
        scheduler from here, before the task first runs."""
        received_at = self.clock()
        try:
            job: JobMessage | ValidationError = JobMessage.model_validate_json(message["Body"])
        except ValidationError as e:
            job = e
        runner = self.runners.get(job.model) if isinstance(job, JobMessage) else None
        arrival = runner.arrival() if runner is not None else None
        task = asyncio.create_task(self.handle(message, job, arrival, received_at))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if self.on_load is not None:
            self.on_load(len(self._tasks))
        if arrival is not None:
            task.add_done_callback(lambda _: arrival.done())  # even if cancelled before it ran

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self.on_load is not None:
            self.on_load(len(self._tasks))
        self._slot_freed.set()
        self._set_intake_full(len(self._tasks) >= self.capacity)
        if not task.cancelled() and task.exception() is not None:
            logger.error("message handler crashed", exc_info=task.exception())

    def _set_intake_full(self, full: bool) -> None:
        for runner in self.runners.values():
            runner.set_intake_full(full)
