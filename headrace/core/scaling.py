"""How many GPU workers a backlog needs: the one scaling rule of Headrace.

template.yaml encodes this rule in Application Auto Scaling (README "Deploying to AWS" puts the
two side by side); the simulator (`python -m bench.autoscale`) calls it, as a local autoscaler
should. It is pure: the caller brings the queue counts, the clock and the previous state.

- **Backlog** is every job not finished: messages visible plus in flight, in both lanes' queues
  (a job a worker holds is work a worker must still do, as KEDA's SQS scaler counts it).
- **Scale out** to `ceil(backlog / target_backlog_per_worker)` once the backlog has asked for
  more workers for `scale_out_after_seconds` (target tracking's alarm wants 3 one-minute
  datapoints above the target).
- **Scale in** once the backlog has asked for fewer workers for `scale_in_after_seconds`
  (target tracking's alarm wants 15 datapoints below), to the most it asked for in that time
  (as Kubernetes' scale-down stabilization window does: target tracking removes capacity less
  eagerly than it adds it), then no more often than `scale_in_cooldown_seconds` (the policy's
  ScaleInCooldown). An empty backlog thus reaches `min_workers` (0) after
  `scale_in_after_seconds`.
- **Leave zero**: target tracking multiplies the desired count by the metric's ratio to the
  target, and zero times anything is zero, so with no worker desired and messages visible for
  `wake_after_seconds` the rule asks for exactly one (the step policy on the "messages visible
  and no task desired" alarm, which sets an exact capacity because CloudWatch repeats the action
  every minute while the alarm lasts). Without `wake_from_zero` it never leaves zero, as target
  tracking alone (SageMaker Async without its HasBacklogWithoutCapacity policy).
- **Divide by**: the template divides the backlog by the service's desired task count, so the
  proportional step lands on `ceil(backlog / target)`. Dividing by the running tasks instead
  (`divide_by="running"`) asks for `desired * backlog / (running * target)`, more than needed
  while tasks are still starting; the simulator shows what that costs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class LaneCounts:
    """One lane's queue as SQS counts it (ApproximateNumberOfMessages[Not]Visible)."""

    visible: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class Backlog:
    """The jobs of every lane not finished yet."""

    visible: int = 0
    in_flight: int = 0

    @classmethod
    def of_lanes(cls, lanes: Iterable[LaneCounts]) -> Backlog:
        lanes = list(lanes)
        return cls(
            visible=sum(lane.visible for lane in lanes),
            in_flight=sum(lane.in_flight for lane in lanes),
        )

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


@dataclass(frozen=True)
class ScalingPolicy:
    """The rule's parameters; template.yaml's defaults are explained in README."""

    target_backlog_per_worker: float
    max_workers: int
    min_workers: int = 0
    scale_out_after_seconds: float = 180.0
    scale_in_after_seconds: float = 900.0
    scale_in_cooldown_seconds: float = 300.0
    wake_after_seconds: float = 60.0
    wake_from_zero: bool = True
    divide_by: Literal["desired", "running"] = "desired"

    def __post_init__(self) -> None:
        if self.target_backlog_per_worker <= 0:
            raise ValueError("target_backlog_per_worker must be positive")
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError("need 0 <= min_workers <= max_workers")
        timings = (
            self.scale_out_after_seconds,
            self.scale_in_after_seconds,
            self.scale_in_cooldown_seconds,
            self.wake_after_seconds,
        )
        if min(timings) < 0:
            raise ValueError("waits and cooldowns cannot be negative")

    def clamp(self, workers: int) -> int:
        return max(self.min_workers, min(self.max_workers, workers))


@dataclass(frozen=True)
class ScalingState:
    """What the rule remembers between two looks: the count it asked for, and since when the
    backlog has asked for more, for fewer, or for a first worker."""

    desired: int = 0
    more_since: float | None = None
    fewer_since: float | None = None
    fewer_most: int = 0  # the most workers the backlog asked for since fewer_since
    wake_since: float | None = None
    last_scale_in: float | None = None


def wanted_workers(policy: ScalingPolicy, backlog: Backlog, running: int, desired: int) -> int:
    """The count target tracking steps to from `desired` workers (0 stays 0)."""
    if desired == 0:
        return policy.min_workers
    per_worker = backlog.total / max(desired if policy.divide_by == "desired" else running, 1)
    return policy.clamp(math.ceil(desired * per_worker / policy.target_backlog_per_worker))


def decide(
    policy: ScalingPolicy, backlog: Backlog, running: int, state: ScalingState, now: float
) -> ScalingState:
    """The state after looking at `backlog` and `running` workers at time `now` (seconds);
    its `desired` is the worker count to run."""
    desired = policy.clamp(state.desired)
    if desired == 0:
        if not (policy.wake_from_zero and backlog.visible > 0):
            return ScalingState(desired=0, last_scale_in=state.last_scale_in)
        wake_since = now if state.wake_since is None else state.wake_since
        if now - wake_since >= policy.wake_after_seconds:
            return ScalingState(desired=policy.clamp(1), last_scale_in=state.last_scale_in)
        return replace(state, desired=0, wake_since=wake_since)
    state = replace(state, desired=desired, wake_since=None)
    wanted = wanted_workers(policy, backlog, running, desired)
    if wanted > desired:
        more_since = now if state.more_since is None else state.more_since
        if now - more_since >= policy.scale_out_after_seconds:
            return replace(state, desired=wanted, more_since=None, fewer_since=None, fewer_most=0)
        return replace(state, more_since=more_since, fewer_since=None, fewer_most=0)
    if wanted < desired:
        fewer_since = now if state.fewer_since is None else state.fewer_since
        most = wanted if state.fewer_since is None else max(state.fewer_most, wanted)
        cooled = (
            state.last_scale_in is None
            or now - state.last_scale_in >= policy.scale_in_cooldown_seconds
        )
        state = replace(state, more_since=None, fewer_since=fewer_since)
        if now - fewer_since >= policy.scale_in_after_seconds and cooled:
            # The wait goes on from here: the next step down needs the cooldown, not 15 minutes.
            return replace(state, desired=most, fewer_most=0, last_scale_in=now)
        return replace(state, fewer_most=most)
    return replace(state, more_since=None, fewer_since=None, fewer_most=0)
