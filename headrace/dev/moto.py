"""Run a moto server, the local AWS endpoint, as a child process (dev stack and tests)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final, TypedDict


class Credentials(TypedDict):
    """Keyword arguments of boto3 Session / client: `Session(**MOTO_CREDENTIALS)`."""

    aws_access_key_id: str
    aws_secret_access_key: str


# Credentials and region for talking to a moto server: moto accepts any, real AWS none of these.
MOTO_ACCOUNT_ID: Final = "123456789012"
MOTO_CREDENTIALS: Final[Credentials] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}
MOTO_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_PORT_ATTEMPTS = 5


class MotoServerError(RuntimeError):
    """The moto server exited or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` right now (another process may still take it before we bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def endpoint_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_moto_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_file: str | os.PathLike[str] | None = None,
    ready_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = True,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's server (headrace.dev.moto_server); return (process, URL) once it answers.

    port: 0 picks a free port (retrying if another process grabs it first).
    log_file: where the server's banner and per-request log lines go (appended); None discards
    them. env: extra environment for the server (e.g. MOTO_* settings).
    die_with_parent: on Linux the server gets SIGTERM when the thread that started it dies, so a
    killed test run or dev stack leaves no server behind. Start it from a long-lived thread (the
    main thread) or pass False.
    Stop it with `stop_process(process)`.
    """
    attempts = _PORT_ATTEMPTS if port == 0 else 1
    last_error: MotoServerError | None = None
    for _ in range(attempts):
        chosen = port or free_port(host)
        process = _spawn(host, chosen, log_file=log_file, env=env, die_with_parent=die_with_parent)
        url = endpoint_url(host, chosen)
        try:
            wait_until_ready(url, process, timeout=ready_timeout)
        except MotoServerError as exc:
            stop_process(process)
            last_error = exc
            if process.returncode is not None and port == 0:
                continue  # most likely lost the race for the port: try another
            raise
        except BaseException:
            stop_process(process)
            raise
        return process, url
    assert last_error is not None
    raise last_error


@contextlib.contextmanager
def running_moto_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_file: str | os.PathLike[str] | None = None,
    ready_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """`with running_moto_server() as url:` - a moto server for the duration of the block."""
    process, url = start_moto_server(
        host, port, log_file=log_file, ready_timeout=ready_timeout, env=env
    )
    try:
        yield url
    finally:
        stop_process(process)


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes] | None = None, *, timeout: float = 30.0
) -> None:
    """Poll the moto management API until it answers; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    probe = f"{url}/moto-api/"
    while True:
        if process is not None and process.poll() is not None:
            raise MotoServerError(f"moto server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(probe, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise MotoServerError(f"moto server at {url} did not answer within {timeout:g}s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Terminate `process`, kill it if it has not exited after `timeout`, reap it; return status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    returncode = process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return returncode


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """`stop_process` for several at once: all are told to stop first, so their shutdowns
    (a long poll running out, a grace period) overlap instead of adding up."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
        stop_process(process, timeout=0)


def _spawn(
    host: str,
    port: int,
    *,
    log_file: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    die_with_parent: bool,
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "headrace.dev.moto_server", "-H", host, "-p", str(port)]
    child_env = {**os.environ, **(env or {})}
    preexec = parent_death_signal() if die_with_parent else None
    if log_file is None:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env,
            preexec_fn=preexec,  # only calls prctl
            # Its own process group: Ctrl-C reaches the stack, which stops its parts in order.
            process_group=0,
        )
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            preexec_fn=preexec,  # only calls prctl
            # Its own process group: Ctrl-C reaches the stack, which stops its parts in order.
            process_group=0,
        )


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here, in the parent, not after fork
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_pdeathsig
