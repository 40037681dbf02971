"""Jobs through the local stack: submitted over HTTP, decoded by a worker, results polled.

Timings come from the worker's "job succeeded" log lines (its clock is the client's clock on
one machine): time to first token and latency count from the handler's submit time. The
client polls a job as soon as the worker logs it finished, and polls every outstanding job
only when nothing has finished for `sweep_s` seconds (a failure the log did not show), so
polling takes little CPU from the worker it measures: gateway and AWS endpoint share its cores.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.jobs import Job

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


class LogTail:
    """The JSON lines a worker appends to its log from a given offset on."""

    def __init__(self, path: Path, offset: int | None = None) -> None:
        self.path = path
        self.offset = offset if offset is not None else self._size()
        self._partial = b""

    def _size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not ours (a traceback line, say)
            if isinstance(record, dict):
                records.append(record)
        return records


def log_time(record: dict[str, Any]) -> float:
    """The epoch seconds of a log line's "time" (UTC, millisecond resolution)."""
    stamp, _, millis = str(record["time"]).rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis or 0) / 1000


@dataclass
class JobResult:
    index: int
    request_id: str
    status: str = "QUEUED"
    completion_tokens: int = 0
    ttft_s: float | None = None  # submit -> first token
    receive_to_first_token_s: float | None = None
    latency_s: float | None = None  # submit -> stored and deleted
    done_at: float | None = None  # epoch seconds (worker clock)
    polled_done_at: float | None = None  # when the client saw it final


@dataclass
class PhaseResult:
    t0: float
    jobs: list[JobResult]
    batches: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0

    @property
    def makespan_s(self) -> float:
        ends = [j.done_at for j in self.jobs if j.done_at is not None]
        return max(ends) - self.t0 if ends else float("nan")

    @property
    def polled_makespan_s(self) -> float:
        ends = [j.polled_done_at for j in self.jobs if j.polled_done_at is not None]
        return max(ends) - self.t0 if ends else float("nan")


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = {"x-api-key": api_key, "content-type": "application/json"}

    async def submit(self, model: str, body: dict[str, Any]) -> str:
        url = f"{self.base_url}/v1/llm/completions-async?model_endpoint_name={model}"
        async with self.session.post(url, json=body, headers=self.headers) as response:
            answer = await response.json()
            if response.status != 202:
                raise RuntimeError(f"submit answered {response.status}: {answer}")
            return str(answer["request_id"])

    async def status(self, request_id: str) -> dict[str, Any]:
        url = f"{self.base_url}/v1/llm/completions/{request_id}"
        async with self.session.get(url, headers=self.headers) as response:
            answer: dict[str, Any] = await response.json()
            if response.status != 200:
                raise RuntimeError(f"status answered {response.status}: {answer}")
            return answer


def job_body(job: Job) -> dict[str, Any]:
    return {"prompt": job.prompt, "max_new_tokens": job.max_new_tokens, "temperature": 0}


async def read_stream(
    ws: aiohttp.ClientWebSocketResponse,
    on_accepted: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Read the stream of the job on `ws` to its last event: (time.monotonic() of its first
    event, the last event). The socket's acknowledgement goes to `on_accepted`. A failed
    stream, or a socket that closes before the last event, raises."""
    first: float | None = None
    async for message in ws:
        event = json.loads(message.data)
        if event.get("type") == "accepted":
            if on_accepted is not None:
                on_accepted(event)
            continue
        if event.get("error"):
            raise RuntimeError(f"stream failed: {event['error']}")
        first = first or time.monotonic()
        if event["output"]["finished"]:
            return first, event
    raise RuntimeError("the socket closed before the last event")


async def run_jobs(
    base_url: str,
    api_key: str,
    model: str,
    jobs: list[Job],
    log: LogTail,
    *,
    sweep_s: float = 10.0,
    timeout_s: float = 900.0,
) -> PhaseResult:
    """Submit every job at once, then wait until all are final."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        client = Client(session, base_url, api_key)
        t0 = time.time()
        ids = await asyncio.gather(*(client.submit(model, job_body(j)) for j in jobs))
        result = PhaseResult(t0, [JobResult(j.index, i) for j, i in zip(jobs, ids, strict=True)])
        await _wait_all(client, result, log, sweep_s=sweep_s, deadline=t0 + timeout_s)
        return result


async def _wait_all(
    client: Client, result: PhaseResult, log: LogTail, *, sweep_s: float, deadline: float
) -> None:
    by_id = {j.request_id: j for j in result.jobs}
    outstanding = set(by_id)
    next_sweep = time.time() + sweep_s

    async def poll(request_id: str) -> None:
        answer = await client.status(request_id)
        result.polls += 1
        job = by_id[request_id]
        if answer["status"] in FINAL and request_id in outstanding:
            outstanding.discard(request_id)
            job.status = answer["status"]
            job.polled_done_at = time.time()
            output = answer.get("output") or {}
            job.completion_tokens = int(output.get("num_completion_tokens") or 0)

    while outstanding:
        if time.time() > deadline:
            raise TimeoutError(f"{len(outstanding)} jobs not final in time")
        logged = []
        for record in log.read():
            request_id = record.get("request_id")
            if record.get("message") == "batch started":
                result.batches.append(record)
            elif request_id in by_id and record.get("message") in ("job succeeded", "job failed"):
                _take_timings(by_id[request_id], record)
                logged.append(request_id)
        due = [r for r in logged if r in outstanding]
        if due:
            next_sweep = time.time() + sweep_s
        elif time.time() >= next_sweep:
            due = sorted(outstanding)
            next_sweep = time.time() + sweep_s
        await _bounded(poll(r) for r in due)
        await asyncio.sleep(0.05)
    for record in log.read():  # the last lines of the phase
        if record.get("message") == "batch started":
            result.batches.append(record)


def _take_timings(job: JobResult, record: dict[str, Any]) -> None:
    def seconds(key: str) -> float | None:
        value = record.get(key)
        return float(value) / 1000 if value is not None else None

    job.ttft_s = seconds("submit_to_first_token_ms")
    job.receive_to_first_token_s = seconds("receive_to_first_token_ms")
    job.latency_s = seconds("submit_to_done_ms")
    job.done_at = log_time(record)


async def _bounded(coroutines: Any, limit: int = 8) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> None:
        async with gate:
            await coroutine

    await asyncio.gather(*(one(c) for c in coroutines))


async def submit_and_wait(
    base_url: str, api_key: str, model: str, job: Job, log: LogTail, timeout_s: float = 300.0
) -> JobResult:
    """One job on its own (the probes)."""
    return (await run_jobs(base_url, api_key, model, [job], log, timeout_s=timeout_s)).jobs[0]


async def short_during_long(
    base_url: str, api_key: str, model: str, long: Job, short: Job, log: LogTail
) -> tuple[JobResult, JobResult]:
    """Submit `long`; once its batch has started, submit `short`; wait for both."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        client = Client(session, base_url, api_key)
        t0 = time.time()
        long_id = await client.submit(model, job_body(long))
        records: list[dict[str, Any]] = []
        while not any(long_id in (r.get("requests") or []) for r in records):
            if time.time() > t0 + 120:
                raise TimeoutError("the long job's batch never started")
            await asyncio.sleep(0.02)
            records += log.read()
        await asyncio.sleep(0.2)  # let it decode a little
        short_id = await client.submit(model, job_body(short))
        result = PhaseResult(t0, [JobResult(long.index, long_id), JobResult(short.index, short_id)])
        await _wait_all(client, result, log, sweep_s=10.0, deadline=t0 + 600)
        return result.jobs[0], result.jobs[1]
