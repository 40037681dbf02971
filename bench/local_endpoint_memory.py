"""Does the local AWS endpoint keep memory it should not? Its RSS and latency under the calls
the stack makes most.

`python -m bench.local_endpoint_memory [--items 3000] [--calls 1000] [--rounds 3] [--runs 3]`

Each run starts a fresh local AWS endpoint (`headrace.dev.moto_server`, as `headrace dev`
does), creates the resources of template.yaml, fills the jobs table with `--items` items (jobs
and their stream chunks, about the sizes the stack writes), then plays `--rounds` rounds of:

- **transact**: `--calls` TransactWriteItems, alternately a WebSocket subscription and its
  removal (the requests of `headrace.core.tables.connections`: one per `complete`, `subscribe`
  and disconnect);
- **put**: `--calls` PutItem of a stream chunk, rewriting chunks that exist (the table keeps
  its size, so memory it gains is memory it keeps, not data);
- **sqs**: `--calls` messages sent, received and deleted on the jobs queue; `ms` is the receive.

It prints the endpoint's RSS after the fill and after each round, and for each phase the
median ms per call and the RSS it added per 1,000 calls; with several runs, the medians over
runs. An endpoint that keeps nothing grows in round 1 (caches, allocator arenas) and stays
flat after: look at the last rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from bench.procinfo import machine
from headrace.core.contracts import StreamEvent
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.moto import MOTO_CREDENTIALS, start_moto_server, stop_process
from infra.provision import AwsClients, ProvisionedResources, provision

PHASES = ("transact", "put", "sqs")
_CHUNKS_PER_JOB = 9  # a job item and its chunks: ten items per job
_BATCH = 25  # BatchWriteItem's limit


@dataclass
class Round:
    rss_mib: float = 0.0  # after the round
    ms: dict[str, float] = field(default_factory=dict)  # median per call, by phase
    kib_per_1000: dict[str, float] = field(default_factory=dict)  # RSS added, by phase


@dataclass
class Run:
    rss_after_fill_mib: float
    rounds: list[Round]
    peak_mib: float


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


class Workload:
    """The calls of one run, against one endpoint."""

    def __init__(self, clients: AwsClients, resources: ProvisionedResources) -> None:
        self.dynamodb: Any = clients.dynamodb
        self.sqs: Any = clients.sqs
        self.table = resources.table_name
        self.queue_url = resources.queue_url
        self.request_ids: list[str] = []
        self._counter = 0
        self._subscribed: tuple[str, str] | None = None  # (request_id, connection_id)

    def fill(self, items: int) -> None:
        now = time.time()
        pending: list[dict[str, Any]] = []
        for _ in range(max(1, items // (_CHUNKS_PER_JOB + 1))):
            request_id = str(uuid.uuid4())
            self.request_ids.append(request_id)
            pending.append({"PutRequest": {"Item": self._job_item(request_id, now)}})
            for seq in range(_CHUNKS_PER_JOB):
                pending.append({"PutRequest": {"Item": self._chunk(request_id, seq)["Item"]}})
        for start in range(0, len(pending), _BATCH):
            batch = pending[start : start + _BATCH]
            self.dynamodb.batch_write_item(RequestItems={self.table: batch})

    def _job_item(self, request_id: str, now: float) -> dict[str, Any]:
        return {
            **job_table.job_key(request_id),
            "status": {"S": "SUCCEEDED"},
            "prompt": {"S": "The river " * 40},
            "output": {"S": "flows " * 60},
            "created_at": {"N": repr(now)},
            "expires_at": {"N": str(int(now) + 3600)},
        }

    def _chunk(self, request_id: str, seq: int) -> dict[str, Any]:
        event = StreamEvent.model_validate(
            {
                "request_id": request_id,
                "seq": seq,
                "output": {"text": " token" * 8, "finished": False, "num_completion_tokens": seq},
            }
        )
        return stream_table.put_chunk(
            self.table,
            request_id=request_id,
            event=event,
            token_ids=list(range(1000, 1008)),
            expires_at=int(time.time()) + 3600,
        )

    def _next_job(self) -> str:
        self._counter += 1
        return self.request_ids[self._counter % len(self.request_ids)]

    def transact(self) -> float:
        """One TransactWriteItems: a subscription added, or the last one added removed."""
        if self._subscribed is None:
            self._subscribed = (self._next_job(), uuid.uuid4().hex[:16])
            request_id, connection_id = self._subscribed
            request = connection_table.add_subscription(
                self.table,
                request_id=request_id,
                connection_id=connection_id,
                endpoint="http://127.0.0.1:8080/ws",
                from_seq=0,
                now=time.time(),
            )
        else:
            request_id, connection_id = self._subscribed
            self._subscribed = None
            request = connection_table.delete_subscription(
                self.table, request_id=request_id, connection_id=connection_id
            )
        started = time.perf_counter()
        self.dynamodb.transact_write_items(**request)
        return (time.perf_counter() - started) * 1000

    def put(self) -> float:
        chunk = self._chunk(self._next_job(), self._counter % _CHUNKS_PER_JOB)
        started = time.perf_counter()
        self.dynamodb.put_item(**chunk)
        return (time.perf_counter() - started) * 1000

    def sqs_round_trip(self) -> float:
        """Send one message, receive it, delete it; ms of the receive."""
        body = json.dumps({"request_id": str(uuid.uuid4()), "padding": "x" * 900})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        started = time.perf_counter()
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=1)
        elapsed = (time.perf_counter() - started) * 1000
        for message in answer.get("Messages", []):
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return elapsed


def _phase(pid: int, calls: int, call: Callable[[], float]) -> tuple[float, float]:
    """(median ms per call, KiB of RSS added per 1,000 calls)."""
    before = rss_mib(pid)
    times = [call() for _ in range(calls)]
    added_kib = (rss_mib(pid) - before) * 1024
    return statistics.median(times), added_kib * 1000 / calls


def one_run(args: argparse.Namespace, run_index: int) -> Run:
    log = Path(args.out) / f"moto-{run_index}.log"
    process, url = start_moto_server(log_file=log)
    try:
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        clients = AwsClients.create(url, session=session)
        try:
            workload = Workload(clients, provision(clients))
            workload.fill(args.items)
            run = Run(rss_after_fill_mib=rss_mib(process.pid), rounds=[], peak_mib=0.0)
            calls = {"transact": workload.transact, "put": workload.put}
            calls["sqs"] = workload.sqs_round_trip
            for number in range(1, args.rounds + 1):
                this_round = Round()
                for phase in PHASES:
                    ms, kib = _phase(process.pid, args.calls, calls[phase])
                    this_round.ms[phase], this_round.kib_per_1000[phase] = ms, kib
                this_round.rss_mib = rss_mib(process.pid)
                run.rounds.append(this_round)
                print(f"  run {run_index} round {number}: {_round_line(this_round)}", flush=True)
            run.peak_mib = rss_mib(process.pid, "VmHWM")
            return run
        finally:
            clients.close()
    finally:
        stop_process(process)


def _round_line(r: Round) -> str:
    phases = ", ".join(
        f"{p} {r.ms[p]:.2f} ms/call {r.kib_per_1000[p]:+.0f} KiB/1000" for p in PHASES
    )
    return f"RSS {r.rss_mib:.0f} MiB; {phases}"


def report(runs: list[Run], args: argparse.Namespace) -> None:
    med = statistics.median
    print(f"\n{machine()}")
    print(
        f"{len(runs)} run(s), {args.items} items, {args.calls} calls a phase, "
        f"{args.rounds} rounds; medians over runs"
    )
    print(f"RSS after fill: {med(r.rss_after_fill_mib for r in runs):.0f} MiB")
    for i in range(args.rounds):
        print(f"round {i + 1}: {_round_line(_median_round([r.rounds[i] for r in runs]))}")
    last = _median_round([r.rounds[-1] for r in runs])
    print(f"RSS at the end: {last.rss_mib:.0f} MiB; peak {med(r.peak_mib for r in runs):.0f} MiB")


def _median_round(rounds: list[Round]) -> Round:
    med = statistics.median
    return Round(
        rss_mib=med(r.rss_mib for r in rounds),
        ms={p: med(r.ms[p] for r in rounds) for p in PHASES},
        kib_per_1000={p: med(r.kib_per_1000[p] for r in rounds) for p in PHASES},
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.local_endpoint_memory")
    parser.add_argument("--items", type=int, default=3000, help="table items before the rounds")
    parser.add_argument("--calls", type=int, default=1000, help="calls per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    parser.add_argument("--out", default="bench/out/local-endpoint", help="server logs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = [one_run(args, index) for index in range(1, args.runs + 1)]
    report(runs, args)


if __name__ == "__main__":
    main()
