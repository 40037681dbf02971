"""Resident memory of every process of the stack, sampled in a thread, and its growth per hour
fitted over the samples after a warm-up."""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.procinfo import children, peak_rss_mb
from headrace.dev.stack import LocalStack

CSV_FIELDS = ("elapsed_s", "process", "pid", "rss_mib")


@dataclass(frozen=True)
class Process:
    label: str  # moto, gateway, worker-1, suite; a child of one is "<label>/<pid>"
    pid: int


def rss_mib(pid: int) -> float | None:
    """VmRSS in MiB, or None once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None  # a zombie has no VmRSS line


def _descendants(label: str, pid: int) -> list[Process]:
    found = []
    for child in sorted(children(pid)):
        found += [Process(f"{label}/{child}", child), *_descendants(label, child)]
    return found


def stack_processes(stack: LocalStack) -> list[Process]:
    """This process and every process of `stack`, told apart by pid (workers) or by the port
    on their command line, so another server this process started (a test's) is left out."""
    moto_port = str(urlsplit(stack.aws_endpoint_url).port)
    gateway_port = str(urlsplit(stack.base_url).port)
    workers = {process.pid: f"worker-{i + 1}" for i, process in enumerate(stack.workers)}
    found = [Process("suite", os.getpid())]
    for pid, command in sorted(children().items()):
        words = command.split()
        if pid in workers:
            label = workers[pid]
        elif "headrace.dev.moto_server" in words and words[-1] == moto_port:
            label = "moto"
        elif "gateway" in words and gateway_port in words:
            label = "gateway"
        else:
            continue
        found += [Process(label, pid), *_descendants(label, pid)]
    return found


@dataclass
class Series:
    process: Process
    times: list[float] = field(default_factory=list)  # seconds since the sampling began
    rss: list[float] = field(default_factory=list)  # MiB
    peak: float = 0.0  # VmHWM at the last sample: the peak since the process started
    gone_at: float | None = None


class Sampler:
    """Samples every `every` seconds from start() to stop() (both included), appending each
    row to samples.csv as it goes, so a run cut short keeps what it saw."""

    def __init__(
        self,
        processes: list[Process],
        *,
        every: float,
        csv_path: Path,
        progress: Callable[[float, dict[str, float]], None],
    ) -> None:
        self.series = [Series(p) for p in processes]
        self.every = every
        self.csv_path = csv_path
        self.progress = progress
        self.began = self.ended = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sample", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.began = time.monotonic()
        with self.csv_path.open("w", newline="") as f:
            csv.writer(f).writerow(CSV_FIELDS)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stopping.wait(self.every):
                return

    def sample(self) -> None:
        with self._lock:
            self.ended = time.monotonic()
            elapsed = self.ended - self.began
            now: dict[str, float] = {}
            rows = []
            for series in self.series:
                if series.gone_at is not None:
                    continue
                rss = rss_mib(series.process.pid)
                if rss is None:
                    series.gone_at = elapsed
                    continue
                series.times.append(elapsed)
                series.rss.append(rss)
                series.peak = peak_rss_mb(series.process.pid) or series.peak
                now[series.process.label] = rss
                rows.append((f"{elapsed:.1f}", series.process.label, series.process.pid, rss))
            with self.csv_path.open("a", newline="") as f:
                csv.writer(f).writerows((*row[:3], f"{row[3]:.2f}") for row in rows)
        self.progress(elapsed, now)

    def stop(self) -> None:
        """Stop sampling, with one last sample."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(10)
            self.sample()


def slope_per_hour(times: list[float], values: list[float]) -> float | None:
    """Least-squares slope of values over times (seconds), per hour; None under two samples."""
    n = len(times)
    if n < 2:
        return None
    mean_t = sum(times) / n
    mean_v = sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return None
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    return covariance / spread * 3600


@dataclass(frozen=True)
class Growth:
    label: str
    pid: int
    start_mib: float | None  # the first sample after the warm-up
    end_mib: float | None
    peak_mib: float
    mib_per_hour: float | None
    samples: int  # after the warm-up
    exited_at: float | None  # seconds into the run, if it exited while sampled


def growth(series: Series, warmup: float) -> Growth:
    kept = [(t, v) for t, v in zip(series.times, series.rss, strict=True) if t >= warmup]
    times = [t for t, _ in kept]
    values = [v for _, v in kept]
    return Growth(
        label=series.process.label,
        pid=series.process.pid,
        start_mib=values[0] if values else None,
        end_mib=values[-1] if values else None,
        peak_mib=series.peak,
        mib_per_hour=slope_per_hour(times, values),
        samples=len(kept),
        exited_at=series.gone_at,
    )


def growth_limit(max_per_hour: float, floor_mib: float, window_seconds: float) -> float:
    """The slope a process must exceed to count as growing: `max_per_hour`, or more over a
    window so short that less than `floor_mib` of fitted growth would exceed it (one allocator
    arena, a cache filling after the warm-up, is not a leak)."""
    hours = window_seconds / 3600
    return max(max_per_hour, floor_mib / hours) if hours > 0 else float("inf")
