"""The fleet model behind `python -m bench.autoscale`: arrivals, a FIFO queue, GPU workers that
take minutes to start, and a scaling policy looked at once a minute.

A worker has `slots` jobs in service at once and finishes `jobs_per_second` at full load, so a
job takes `slots / jobs_per_second` seconds once started. One worker is one GPU instance. A new
worker waits for an instance (boot), its image (pull) and its model (load); a worker started on
an instance that is still up after an earlier worker stopped skips boot and pull. An instance
whose worker stopped stays up (and is paid for) for `instance_linger_s`, as the capacity
provider's managed scaling removes it only after its own alarm. A worker that holds jobs is not
stopped (task scale-in protection): scale-in waits until enough workers are idle.

Everything is counted per time step (`step_s`), jobs in cohorts of one arrival step, so a day at
a hundred workers runs in about a second.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from headrace.core.scaling import Backlog, ScalingPolicy, ScalingState, decide

DAY_S = 24 * 3600


@dataclass(frozen=True)
class ColdStart:
    """Seconds of each link of the chain from "a worker is wanted" to "it takes jobs"."""

    instance_boot_s: float = 180.0  # managed scaling reacts, EC2 launches, the ECS agent registers
    image_pull_s: float = 90.0
    model_load_s: float = 45.0  # S3 download, load, warm-up
    warm_task_start_s: float = 10.0  # a container on an instance that has the image
    instance_linger_s: float = 900.0

    @property
    def cold_s(self) -> float:
        return self.instance_boot_s + self.image_pull_s + self.model_load_s

    @property
    def warm_s(self) -> float:
        return self.warm_task_start_s + self.model_load_s


@dataclass(frozen=True)
class WorkerModel:
    jobs_per_second: float = 2.42
    slots: int = 16
    first_token_s: float = 0.27  # from the start of a job on an idle worker to its first token

    @property
    def service_s(self) -> float:
        return self.slots / self.jobs_per_second


@dataclass(frozen=True)
class SimConfig:
    cold: ColdStart = ColdStart()
    worker: WorkerModel = WorkerModel()
    price_per_hour: float = 0.805
    step_s: float = 2.0
    eval_every_s: float = 60.0  # CloudWatch's one-minute datapoints
    metric_lag_s: float = 60.0  # SQS publishes its counts once a minute
    drain_s: float = 2 * 3600.0  # after the trace, run on this long at most to finish its jobs
    idle_gap_s: float = 1800.0  # a job after this long without arrivals "comes after idle"


@dataclass(frozen=True)
class AlwaysOn:
    workers: int


Fleet = ScalingPolicy | AlwaysOn


@dataclass
class Result:
    gpu_hours: float
    cost: float
    waits: dict[int, int]  # wait in steps -> jobs
    unserved: int
    step_s: float
    worst_after_idle_s: float  # first token of the first job after an idle period; inf: never
    peak_workers: int
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, desired, ready)

    @property
    def served(self) -> int:
        return sum(self.waits.values())

    def wait_percentile(self, q: float) -> float:
        """Queue wait (arrival to start) at quantile q; inf when that job was never started."""
        total = self.served + self.unserved
        if total == 0:
            return 0.0
        rank = math.ceil(q * total)
        seen = 0
        for wait, count in sorted(self.waits.items()):
            seen += count
            if seen >= rank:
                return wait * self.step_s
        return math.inf


def poisson_counts(rates: np.ndarray, step_s: float, seed: int) -> list[int]:
    """Arrivals per step for a rate (jobs/s) per step, seeded."""
    rng = np.random.default_rng(seed)
    return [int(n) for n in rng.poisson(np.maximum(rates, 0.0) * step_s)]


class _Fleet:
    """Workers starting and running, instances idling, and what they cost."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ready = 0
        self.starting: list[int] = []  # step at which each starting worker is ready
        self.idle_instances: deque[int] = deque()  # step at which each one is removed
        self.instance_steps = 0
        self.peak = 0

    @property
    def workers(self) -> int:
        return self.ready + len(self.starting)

    def tick(self, step: int) -> None:
        became_ready = [s for s in self.starting if s <= step]
        if became_ready:
            self.ready += len(became_ready)
            self.starting = [s for s in self.starting if s > step]
        while self.idle_instances and self.idle_instances[0] <= step:
            self.idle_instances.popleft()
        self.instance_steps += self.workers + len(self.idle_instances)
        self.peak = max(self.peak, self.workers)

    def start(self, count: int, step: int) -> None:
        cold = self.config.cold
        for _ in range(count):
            warm = bool(self.idle_instances)
            if warm:
                self.idle_instances.pop()
            seconds = cold.warm_s if warm else cold.cold_s
            self.starting.append(step + math.ceil(seconds / self.config.step_s))

    def stop(self, count: int, busy: int, step: int) -> int:
        """Stop up to `count` workers, starting ones first, never one that holds jobs."""
        linger = step + math.ceil(self.config.cold.instance_linger_s / self.config.step_s)
        stopped = 0
        while stopped < count and self.starting:
            self.starting.pop()
            self.idle_instances.append(linger)
            stopped += 1
        holding = math.ceil(busy / self.config.worker.slots)
        while stopped < count and self.ready > holding:
            self.ready -= 1
            self.idle_instances.append(linger)
            stopped += 1
        return stopped


def simulate(counts: list[int], fleet_policy: Fleet, config: SimConfig) -> Result:
    """Replay arrivals per step through the queue and a fleet run by `fleet_policy`."""
    step_s = config.step_s
    worker = config.worker
    service_steps = max(1, round(worker.service_s / step_s))
    eval_steps = max(1, round(config.eval_every_s / step_s))
    lag_evals = round(config.metric_lag_s / config.eval_every_s)
    idle_gap = math.ceil(config.idle_gap_s / step_s)
    total_steps = len(counts) + math.ceil(config.drain_s / step_s)

    fleet = _Fleet(config)
    if isinstance(fleet_policy, AlwaysOn):
        fleet.ready = fleet_policy.workers
    state = ScalingState()
    queue: deque[list[int]] = deque()  # [arrival step, jobs]
    queued = busy = 0
    done_at = [0] * (total_steps + service_steps + 1)
    waits: dict[int, int] = {}
    probes: dict[int, float] = {}  # arrival step of a first job after idle -> its wait
    last_arrival = -idle_gap
    snapshots: list[tuple[int, int, int]] = []  # (visible, in flight, ready) at each look
    timeline: list[tuple[float, int, int]] = []
    wanted = fleet.workers

    for step in range(total_steps):
        arriving = counts[step] if step < len(counts) else 0
        if arriving:
            if step - last_arrival >= idle_gap:
                probes[step] = math.inf
            last_arrival = step
            queue.append([step, arriving])
            queued += arriving
        elif step >= len(counts) and not queued and not busy:
            break
        fleet.tick(step)
        busy -= done_at[step]
        free = fleet.ready * worker.slots - busy
        while free > 0 and queue:
            cohort = queue[0]
            if cohort[0] in probes and probes[cohort[0]] == math.inf:
                probes[cohort[0]] = (step - cohort[0]) * step_s
            take = min(free, cohort[1])
            waits[step - cohort[0]] = waits.get(step - cohort[0], 0) + take
            cohort[1] -= take
            free -= take
            queued -= take
            busy += take
            done_at[step + service_steps] += take
            if cohort[1] == 0:
                queue.popleft()
        if step % eval_steps == 0:
            snapshots.append((queued, busy, fleet.ready))
            if isinstance(fleet_policy, ScalingPolicy):
                seen = snapshots[-1 - lag_evals] if len(snapshots) > lag_evals else (0, 0, 0)
                backlog = Backlog(visible=seen[0], in_flight=seen[1])
                state = decide(fleet_policy, backlog, seen[2], state, step * step_s)
                wanted = state.desired
                if wanted > fleet.workers:
                    fleet.start(wanted - fleet.workers, step)
            timeline.append((step * step_s, wanted, fleet.ready))
        if fleet.workers > wanted:
            fleet.stop(fleet.workers - wanted, busy, step)

    gpu_hours = fleet.instance_steps * step_s / 3600.0
    after_idle = max(probes.values(), default=0.0) + worker.first_token_s
    return Result(
        gpu_hours=gpu_hours,
        cost=gpu_hours * config.price_per_hour,
        waits=waits,
        unserved=queued,
        step_s=step_s,
        worst_after_idle_s=after_idle,
        peak_workers=fleet.peak,
        timeline=timeline,
    )
