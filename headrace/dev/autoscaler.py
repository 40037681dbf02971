"""The dev stack's worker fleet, scaled by the rule the template deploys (headrace/core/scaling.py).

`headrace dev --max-workers N` plays ECS and Application Auto Scaling on one machine: every
`tick` it reads both lanes' queue counts over the wire, asks `decide` for the worker count,
starts workers up to it and stops the extra ones with SIGTERM (each finishes or hands back what
it holds). As ECS scale-in does, it never stops a worker whose task is protected (the local ECS
agent says so: worker/task_protection.py), and it replaces a worker that dies; one that dies
soon after it started waits longer each time, so a broken setting does not spin.

Local timings are short (a first worker is started at once, a scale-in waits `scale_in_after`
seconds of an idle backlog), so scaling from zero, the cold start and scale-in can be watched
and tested on one machine.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from headrace.core.scaling import Backlog, LaneCounts, ScalingPolicy, ScalingState, decide
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import (
    RESTART_DELAY_MAX,
    RESTART_DELAY_MIN,
    STABLE_WORKER_SECONDS,
    LocalStack,
)

logger = logging.getLogger("headrace.dev")

QUEUE_COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


def local_policy(
    *, min_workers: int, max_workers: int, scale_in_after: float, target_backlog: float
) -> ScalingPolicy:
    """The template's rule with local timings: wake at once, add workers after 2 s of a deeper
    backlog, remove them after `scale_in_after` seconds of a shallower one."""
    return ScalingPolicy(
        target_backlog_per_worker=target_backlog,
        max_workers=max_workers,
        min_workers=min_workers,
        scale_out_after_seconds=2.0,
        scale_in_after_seconds=scale_in_after,
        scale_in_cooldown_seconds=scale_in_after,
        wake_after_seconds=0.0,
    )


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    started_at: float  # time.monotonic()
    stop_deadline: float | None = None  # once asked to stop: SIGKILL after this


class LocalAutoscaler:
    def __init__(
        self,
        stack: LocalStack,
        policy: ScalingPolicy,
        *,
        sqs: Any,
        stop_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert stack.resources is not None, "start the stack's AWS side first"
        self.stack = stack
        self.policy = policy
        self.sqs = sqs
        self.stop_timeout = stop_timeout  # SIGTERM to SIGKILL, as a task's stop timeout
        self.clock = clock
        self.state = ScalingState(desired=policy.min_workers)
        self.workers: list[_Worker] = []
        resources = stack.resources
        self._queue_urls = [u for u in (resources.queue_url, resources.batch_queue_url) if u]
        self._started = 0
        self._quick_exits = 0
        self._hold_starts_until = 0.0

    @classmethod
    def for_stack(cls, stack: LocalStack, policy: ScalingPolicy, **options: Any) -> LocalAutoscaler:
        """With an SQS client of its own on the stack's AWS endpoint."""
        assert stack.resources is not None
        session = boto3.session.Session(region_name=stack.resources.region, **MOTO_CREDENTIALS)
        sqs = session.client("sqs", endpoint_url=stack.aws_endpoint_url)
        return cls(stack, policy, sqs=sqs, **options)

    @property
    def serving(self) -> list[_Worker]:
        """Workers running and not asked to stop: the rule's running count."""
        return [w for w in self.workers if w.stop_deadline is None]

    def backlog(self) -> Backlog:
        lanes = []
        for url in self._queue_urls:
            found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=QUEUE_COUNTS)
            counts = found.get("Attributes", {})
            lanes.append(
                LaneCounts(
                    visible=int(counts.get(QUEUE_COUNTS[0], 0)),
                    in_flight=int(counts.get(QUEUE_COUNTS[1], 0)),
                )
            )
        return Backlog.of_lanes(lanes)

    def tick(self) -> None:
        """Look once: reap exited workers, decide, start or stop workers to match."""
        now = self.clock()
        self._reap(now)
        try:
            backlog = self.backlog()
        except (BotoCoreError, ClientError) as e:
            logger.warning("could not read the queues' counts: %s", e)
            return
        before = self.state.desired
        self.state = decide(self.policy, backlog, len(self.serving), self.state, now)
        if self.state.desired != before:
            logger.info(
                "scaling %d -> %d workers",
                before,
                self.state.desired,
                extra={"visible": backlog.visible, "in_flight": backlog.in_flight},
            )
        missing = self.state.desired - len(self.serving)
        if missing > 0 and now >= self._hold_starts_until:
            for _ in range(missing):
                self._start(now)
        elif missing < 0:
            self._stop_idle(-missing, now)

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after the stop timeout)."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.workers.clear()

    def _start(self, now: float) -> None:
        self._started += 1
        name = f"worker-{self._started}"
        process = self.stack.spawn_worker(name)
        self.workers.append(_Worker(name, process, started_at=now))
        logger.info("%s started (pid %d)", name, process.pid)

    def _stop_idle(self, count: int, now: float) -> None:
        """SIGTERM up to `count` workers whose task is not protected, the newest first."""
        agent = self.stack.ecs_agent
        for worker in reversed(self.serving):
            if count == 0:
                return
            task = self.stack.worker_tasks.get(worker.process.pid, "")
            if agent is not None and agent.protected(task):
                continue  # it holds jobs: scale-in waits, as on ECS
            worker.process.send_signal(signal.SIGTERM)
            worker.stop_deadline = now + self.stop_timeout
            count -= 1
            logger.info("%s stopping (scale-in)", worker.name)

    def _reap(self, now: float) -> None:
        for worker in list(self.workers):
            code = worker.process.poll()
            if code is None:
                if worker.stop_deadline is not None and now >= worker.stop_deadline:
                    worker.process.kill()  # past its stop timeout, as ECS would
                continue
            self.workers.remove(worker)
            if worker.stop_deadline is not None:
                logger.info("%s stopped with status %s", worker.name, code)
                continue
            # It died on its own: the rule still wants its place filled (a new one starts
            # in this tick), later if it keeps dying young.
            if now - worker.started_at < STABLE_WORKER_SECONDS:
                self._quick_exits += 1
                delay = min(RESTART_DELAY_MAX, RESTART_DELAY_MIN * 2.0 ** (self._quick_exits - 1))
                self._hold_starts_until = now + delay
            else:
                self._quick_exits, delay = 0, 0.0
            logger.warning(
                "%s exited with status %s; a new one starts in %.0f s", worker.name, code, delay
            )
