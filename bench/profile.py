"""Sampling a worker with py-spy (all its threads, the engine's callback threads included) and
summing the samples by function.

`python -m bench.profile STACKS.txt` prints the summary of a file that `py-spy record --format
raw` wrote (one line per stack: frames joined by ";", then a sample count).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class Sampler:
    """`py-spy record` attached to a running process until `stop`."""

    def __init__(self, pid: int, output: Path, rate: int = 250) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        self._process = subprocess.Popen(
            [
                *(spy, "record", "--pid", str(pid), "--rate", str(rate)),
                *("--format", "raw", "--nonblocking", "--output", str(output)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        self._process.wait(timeout=60)


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/lib/python"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['function']} ({file.rsplit('/', 2)[-2:][-1] if '/' in file else file})"


def _aws_caller(frames: list[str]) -> str | None:
    """The Headrace function that made the AWS call a stack is in, if it is in one."""
    calls = [i for i, f in enumerate(frames) if f.startswith("call_aws_async ")]
    if not calls:
        return None
    ours = [
        f
        for f in frames[: calls[-1]]
        if ("(worker/" in f or "(headrace/" in f) and not f.startswith("with_current_context")
    ]
    return ours[-1] if ours else "?"


def _name_with_path(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return frame.strip() if match is None else f"{match['function']} ({match['file']})"


def summarize(path: Path, top: int = 25) -> list[str]:
    """The functions with the most samples: on the stack (inclusive) and at its top (self),
    and the samples in AWS calls by the Headrace function that made them."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    aws: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        raw = [f for f in stack.split(";") if f]
        frames = [_name(f) for f in raw]
        total += samples
        caller = _aws_caller([_name_with_path(f) for f in raw])
        if caller is not None:
            aws[caller] += samples
        if frames:
            own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    lines = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own), ("AWS calls by caller", aws)):
        lines.append(f"-- {title} --")
        for name, samples in counter.most_common(top):
            lines.append(f"{100 * samples / max(total, 1):5.1f}%  {name}")
    return lines


if __name__ == "__main__":
    print("\n".join(summarize(Path(sys.argv[1]))))
