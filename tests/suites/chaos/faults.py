"""The faults of a chaos run: SIGKILL (and a replacement), one SIGTERM, one SIGSTOP/SIGCONT.

Runs on the main thread: the stack's children die with the thread that started them, so the
replacement workers must be started from one that lives as long as the run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from headrace.dev.stack import LocalStack

Action = str  # "kill", "term" or "zombie"


def plan_faults(kills: int, *, zombie: bool) -> list[Action]:
    """K kills with one SIGTERM after the first and, if asked, a freeze half-way. No kills: no
    SIGTERM either, so `--kills 0` is a calm baseline."""
    actions: list[Action] = ["kill"] * kills
    if kills:
        actions.insert(1, "term")
    if zombie:
        actions.insert(len(actions) // 2 + 1, "zombie")
    return actions


@dataclass
class FaultLog:
    started: float
    lines: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s  {what}"
        self.lines.append(line)
        print(f"  chaos {line}", flush=True)


class Chaos:
    def __init__(
        self,
        stack: LocalStack,
        log: FaultLog,
        *,
        rng: random.Random,
        interval: tuple[float, float],
        freeze_seconds: float,
    ) -> None:
        self.stack = stack
        self.log = log
        self.rng = rng
        self.interval = interval
        self.freeze_seconds = freeze_seconds
        self.frozen: subprocess.Popen[bytes] | None = None
        self._terminated: set[int] = set()
        self.counts = {"SIGKILL": 0, "SIGTERM": 0, "SIGSTOP": 0}

    def run(self, actions: list[Action], *, give_up: Callable[[], bool]) -> None:
        for action in actions:
            pause_until = time.monotonic() + self.rng.uniform(*self.interval)
            while time.monotonic() < pause_until:
                if give_up():
                    self.log.add(f"stopped early, {action} and later faults not done")
                    return
                time.sleep(0.2)
            {"kill": self.kill, "term": self.term, "zombie": self.freeze}[action]()

    def _name(self, process: subprocess.Popen[bytes]) -> str:
        return f"worker-{self.stack.workers.index(process) + 1} (pid {process.pid})"

    def _pick(self) -> subprocess.Popen[bytes] | None:
        live = [
            p
            for p in self.stack.workers
            if p.poll() is None and p is not self.frozen and p.pid not in self._terminated
        ]
        return self.rng.choice(live) if live else None

    def kill(self) -> None:
        victim = self._pick()
        if victim is None:
            self.log.add("SIGKILL skipped: no live worker")
            return
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        self.counts["SIGKILL"] += 1
        replacement = self.stack.start_worker()
        self.log.add(f"SIGKILL {self._name(victim)}; started {self._name(replacement)}")

    def term(self) -> None:
        victim = self._pick()
        if victim is None:
            self.log.add("SIGTERM skipped: no live worker")
            return
        victim.send_signal(signal.SIGTERM)
        self._terminated.add(victim.pid)
        self.counts["SIGTERM"] += 1
        replacement = self.stack.start_worker()
        self.log.add(f"SIGTERM {self._name(victim)}; started {self._name(replacement)}")

    def freeze(self) -> None:
        victim = self._pick()
        if victim is None:
            self.log.add("SIGSTOP skipped: no live worker")
            return
        os.kill(victim.pid, signal.SIGSTOP)
        self.frozen = victim
        self.counts["SIGSTOP"] += 1
        self.log.add(f"SIGSTOP {self._name(victim)} for {self.freeze_seconds:g}s")
        time.sleep(self.freeze_seconds)
        self.thaw()

    def thaw(self) -> None:
        """Resume a frozen worker (also on the way out, so it can be stopped)."""
        if self.frozen is not None:
            if self.frozen.poll() is None:
                os.kill(self.frozen.pid, signal.SIGCONT)
                self.log.add(f"SIGCONT {self._name(self.frozen)}")
            self.frozen = None
