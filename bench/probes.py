"""Scheduling probes on an idle Headrace worker, and what the worker's logs say it did."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.jobs import Job
from bench.phases import Worker, WorkerPhase
from bench.report import TARGET_IDLE_SLACK_S, verdict
from bench.through_stack import short_during_long, submit_and_wait
from headrace.dev.stack import LocalStack


@dataclass
class IdleProbe:
    prompt_tokens: int
    prefill_s: float
    receive_to_first_token_s: list[float]
    submit_to_first_token_s: list[float]

    @property
    def ok(self) -> bool:
        worst = statistics.median(self.receive_to_first_token_s)
        return worst <= self.prefill_s + TARGET_IDLE_SLACK_S

    def line(self) -> str:
        received = statistics.median(self.receive_to_first_token_s)
        submitted = statistics.median(self.submit_to_first_token_s)
        return (
            f"(a) idle worker, {self.prompt_tokens}-token prompt: receive -> first token "
            f"{received * 1000:.0f} ms vs engine prefill {self.prefill_s * 1000:.0f} ms + 100 "
            f"({verdict(self.ok)}); submit -> first token {submitted * 1000:.0f} ms "
            f"(queue, receive and claim: {(submitted - received) * 1000:.0f} ms)"
        )


def idle_probe(
    stack: LocalStack, running: Worker, model: str, job: Job, prefill_s: float, tries: int = 3
) -> IdleProbe:
    received, submitted = [], []
    for _ in range(tries):
        time.sleep(1.0)  # the worker is back in its long poll, nothing held
        result = asyncio.run(
            submit_and_wait(stack.base_url, stack.api_key, model, job, running.log)
        )
        if result.receive_to_first_token_s is not None and result.ttft_s is not None:
            received.append(result.receive_to_first_token_s)
            submitted.append(result.ttft_s)
    return IdleProbe(job.prompt_tokens, prefill_s, received, submitted)


@dataclass
class ShortDuringLong:
    long_latency_s: float
    short_latency_s: float
    short_alone_s: float  # the same short job on an idle worker

    @property
    def ok(self) -> bool:
        # It did not wait for the long batch: done well before it, about as fast as alone.
        return self.short_latency_s < 0.5 * self.long_latency_s

    def line(self) -> str:
        return (
            f"(b) short job submitted while a long batch runs: {self.short_latency_s:.2f} s "
            f"(alone {self.short_alone_s:.2f} s) vs the long batch's {self.long_latency_s:.2f} s "
            f"({verdict(self.ok)})"
        )


def short_probe(
    stack: LocalStack, running: Worker, model: str, long: Job, short: Job
) -> ShortDuringLong:
    time.sleep(1.0)
    alone = asyncio.run(submit_and_wait(stack.base_url, stack.api_key, model, short, running.log))
    time.sleep(1.0)
    long_result, short_result = asyncio.run(
        short_during_long(stack.base_url, stack.api_key, model, long, short, running.log)
    )
    return ShortDuringLong(
        long_latency_s=long_result.latency_s or float("nan"),
        short_latency_s=short_result.latency_s or float("nan"),
        short_alone_s=alone.latency_s or float("nan"),
    )


def evidence(phase: WorkerPhase, jobs: list[Job]) -> dict[str, Any]:
    """Batches the worker formed, time spent before decoding began, CPU of each process."""
    by_id = {j.request_id: j.index for j in phase.result.jobs}
    prompt = {j.index: j.prompt_tokens for j in jobs}
    sizes, spreads = [], []
    for batch in phase.result.batches:
        members = [prompt[by_id[r]] for r in batch.get("requests") or [] if r in by_id]
        if members:
            sizes.append(len(members))
            spreads.append(max(members) - min(members))
    waits = [
        j.ttft_s - j.receive_to_first_token_s
        for j in phase.result.jobs
        if j.ttft_s is not None and j.receive_to_first_token_s is not None
    ]
    makespan = phase.result.makespan_s
    return {
        "batches": len(sizes),
        "batch_sizes": sizes,
        "mean_batch_size": statistics.mean(sizes) if sizes else None,
        "mean_prompt_spread": statistics.mean(spreads) if spreads else None,
        "submit_to_decode_start_p50_s": statistics.median(waits) if waits else None,
        "cpu_s": phase.cpu_s,
        # In cores rather than as a share of the machine: the reference machine has 2, a GPU
        # host 16 or more, and what matters is how many a process kept busy.
        "cpu_cores_busy": {k: v / makespan for k, v in phase.cpu_s.items()},
        "polls": phase.result.polls,
        "client_seen_makespan_s": phase.result.polled_makespan_s,
        "worker_logged_makespan_s": makespan,
    }


def evidence_lines(name: str, facts: dict[str, Any]) -> list[str]:
    sizes = facts["batch_sizes"]
    histogram = {s: sizes.count(s) for s in sorted(set(sizes))}
    busy = facts["cpu_cores_busy"]
    wait = facts["submit_to_decode_start_p50_s"]
    return [
        f"{name}: {facts['batches']} batches, sizes {histogram} (size: count), mean prompt-length "
        f"spread in a batch {facts['mean_prompt_spread'] or 0:.0f} tokens",
        f"{name}: submit -> decode start p50 {wait if wait is not None else float('nan'):.2f} s; "
        f"CPU in cores busy: worker {busy['worker']:.2f}, gateway {busy['gateway']:.2f}, "
        f"moto {busy['moto']:.2f}, event sources {busy.get('events', 0):.2f}, "
        f"client {busy['client']:.2f}; {facts['polls']} polls; "
        f"last result seen by the client {facts['client_seen_makespan_s']:.1f} s vs logged "
        f"{facts['worker_logged_makespan_s']:.1f} s",
    ]
