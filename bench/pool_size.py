"""How many connections should one AWS client keep? botocore keeps 10 unless told otherwise.

`python -m bench.pool_size [--threads 64] [--calls 100] [--pools 10,16,32,64] [--runs 3]`

The local gateway runs Lambda handlers in threads (32 for HTTP routes, 32 for WebSocket
routes) that share one DynamoDB client, as the worker's asyncio tasks share one aioboto3
client. When more calls are in flight than the pool holds, urllib3 opens a connection for the
extra call and closes it afterwards ("Connection pool is full, discarding connection"): a TCP
connection and a server thread per call, on a machine the decoder shares.

Against a fresh local AWS endpoint, `--threads` threads each make `--calls` GetItem calls on
one client built by `headrace.core.aws.boto3_client` with `aws_max_pool_connections` set to
each pool size. It prints, per pool size (medians of `--runs` runs): calls per second, p50 and
p99 ms per call, connections opened, and connections discarded.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3

from bench.procinfo import machine
from headrace.core.aws import boto3_client
from headrace.core.settings import Settings
from headrace.dev.moto import MOTO_CREDENTIALS, MOTO_ENV, start_moto_server, stop_process
from infra.provision import AwsClients, provision


class ConnectionEvents(logging.Handler):
    """Counts urllib3's lines: connections opened, and connections discarded."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.opened = 0
        self.discarded = 0
        self._lock_counts = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        with self._lock_counts:
            if message.startswith("Starting new HTTP"):
                self.opened += 1
            elif message.startswith("Connection pool is full"):
                self.discarded += 1


@dataclass
class Sample:
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    opened: int
    discarded: int


def one_sample(url: str, table: str, pool: int, threads: int, calls: int) -> Sample:
    settings = Settings(aws_endpoint_url=url, table_name=table, aws_max_pool_connections=pool)
    client: Any = boto3_client(settings, "dynamodb")
    key = {"pk": {"S": "apikey#bench"}, "sk": {"S": "apikey"}}
    events = ConnectionEvents()
    urllib3_log = logging.getLogger("urllib3.connectionpool")
    urllib3_log.addHandler(events)
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)

    def calling() -> None:
        mine = []
        start.wait()
        for _ in range(calls):
            began = time.perf_counter()
            client.get_item(TableName=table, Key=key)
            mine.append((time.perf_counter() - began) * 1000)
        with lock:
            times.extend(mine)

    workers = [threading.Thread(target=calling) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    urllib3_log.removeHandler(events)
    client.close()
    times.sort()
    return Sample(
        calls_per_second=len(times) / elapsed,
        p50_ms=times[len(times) // 2],
        p99_ms=times[int(len(times) * 0.99)],
        opened=events.opened,
        discarded=events.discarded,
    )


def median_sample(samples: list[Sample]) -> Sample:
    med = statistics.median
    return Sample(
        calls_per_second=med(s.calls_per_second for s in samples),
        p50_ms=med(s.p50_ms for s in samples),
        p99_ms=med(s.p99_ms for s in samples),
        opened=int(med(s.opened for s in samples)),
        discarded=int(med(s.discarded for s in samples)),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_size")
    parser.add_argument("--threads", type=int, default=64, help="callers sharing one client")
    parser.add_argument("--calls", type=int, default=100, help="calls per thread")
    parser.add_argument("--pools", default="10,16,32,64", help="pool sizes to compare")
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pools = [int(p) for p in args.pools.split(",")]
    logging.getLogger("urllib3.connectionpool").setLevel(logging.DEBUG)
    for name, value in MOTO_ENV.items():
        os.environ.setdefault(name, value)
    process, url = start_moto_server()
    try:
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        clients = AwsClients.create(url, session=session)
        table = provision(clients).table_name
        clients.close()
        samples: dict[int, list[Sample]] = {pool: [] for pool in pools}
        for _ in range(args.runs):
            for pool in pools:  # interleaved, so load on the machine falls on all alike
                samples[pool].append(one_sample(url, table, pool, args.threads, args.calls))
    finally:
        stop_process(process)
    print(machine())
    print(f"{args.threads} threads x {args.calls} GetItem on one client; medians of {args.runs}")
    print(f"{'pool':>5} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'opened':>7} {'discarded':>9}")
    for pool in pools:
        s = median_sample(samples[pool])
        print(
            f"{pool:>5} {s.calls_per_second:>8.0f} {s.p50_ms:>7.1f} {s.p99_ms:>7.1f}"
            f" {s.opened:>7} {s.discarded:>9}"
        )


if __name__ == "__main__":
    main()
