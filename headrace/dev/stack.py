"""The local stack as plain processes: moto server, provisioning from template.yaml, the dev
model in the local S3, the local gateway and workers. `headrace dev` and the tests both use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3

from headrace.client.dev_state import dev_state_path, headrace_home, read_dev_state
from headrace.core import routes
from headrace.core.key_ids import public_key_id
from headrace.core.tables import jobs as job_table
from headrace.dev import model as devmodel
from headrace.dev.ecs_agent import LocalEcsAgent
from headrace.dev.model import DEV_MODEL_NAME, artifact_digest, build_dev_model
from headrace.dev.moto import (
    MOTO_CREDENTIALS,
    MOTO_ENV,
    free_port,
    parent_death_signal,
    start_moto_server,
    stop_processes,
)
from infra.provision import AwsClients, ProvisionedResources, provision, settings_overrides
from worker.artifacts import upload_model

logger = logging.getLogger("headrace.dev")

# A worker that exits this soon after it started failed to start (a bad model, a broken
# setting): its replacement waits RESTART_DELAY_MIN, twice as long after each such exit, up to
# RESTART_DELAY_MAX, so it does not spin. One that served longer is replaced at once.
STABLE_WORKER_SECONDS = 30.0
RESTART_DELAY_MIN = 1.0
RESTART_DELAY_MAX = 30.0


class StackError(RuntimeError):
    """A part of the local stack did not start."""


@dataclass
class StackOptions:
    home: Path = field(default_factory=headrace_home)
    host: str = "127.0.0.1"
    gateway_port: int = 8080
    moto_port: int = 0
    # Template parameter overrides, e.g. {"VisibilityTimeoutSeconds": "3"}.
    parameters: dict[str, str] = field(default_factory=dict)
    # Extra HEADRACE_* settings for the gateway and the workers.
    settings_env: dict[str, str] = field(default_factory=dict)
    # Child processes write to files under logs_dir (default home/logs), else to this terminal.
    log_to_files: bool = True
    logs_dir: Path | None = None


@dataclass
class WorkerSlot:
    """What a worker's replacement needs, and how its predecessors fared."""

    extra_env: Mapping[str, str] | None
    started_at: float  # time.monotonic()
    quick_exits: int = 0  # exits in a row within STABLE_WORKER_SECONDS of the start
    replace_at: float | None = None  # once it has exited: when the next one starts

    def restart_delay(self, now: float) -> float:
        if now - self.started_at >= STABLE_WORKER_SECONDS:
            self.quick_exits = 0
            return 0.0
        self.quick_exits += 1
        return min(RESTART_DELAY_MAX, RESTART_DELAY_MIN * 2.0 ** (self.quick_exits - 1))


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.home = options.home
        self.logs_dir = options.logs_dir or self.home / "logs"
        self._moto: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None
        self._event_sources: subprocess.Popen[bytes] | None = None  # event_sources.py
        self.workers: list[subprocess.Popen[bytes]] = []
        self._worker_slots: list[WorkerSlot] = []
        self.aws_endpoint_url = ""
        self.base_url = ""
        self.api_key = ""
        self.resources: ProvisionedResources | None = None
        self.model_zoo: dict[str, str] = {}
        # The ECS agent's task-protection endpoint for the workers (headrace/dev/ecs_agent.py).
        self.ecs_agent: LocalEcsAgent | None = None
        self.worker_tasks: dict[int, str] = {}  # worker pid -> its task id at the agent

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, *, workers: int = 1) -> None:
        try:
            self.start_aws()
            self.start_gateway()
            self.start_event_sources()
            for _ in range(workers):
                self.start_worker()
            if workers:
                self.wait_for_worker()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Workers first (they hand their jobs back through the AWS endpoint), then what serves
        # the functions, the AWS endpoint last; each group stops at once.
        for group in ([*self.workers], [self._event_sources, self._gateway], [self._moto]):
            stop_processes([p for p in group if p is not None], timeout=10)
        self.workers.clear()
        self._worker_slots.clear()
        self._gateway = self._moto = self._event_sources = None
        if self.ecs_agent is not None:  # after the workers: they clear their protection last
            self.ecs_agent.stop()
            self.ecs_agent = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- parts -------------------------------------------------------------------------------

    def start_aws(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self._moto, self.aws_endpoint_url = start_moto_server(
            self.options.host,
            self.options.moto_port,
            log_file=self.logs_dir / "moto.log",
        )
        session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
        clients = AwsClients.create(self.aws_endpoint_url, session=session)
        try:
            self.resources = provision(clients, overrides=self.options.parameters)
            self.model_zoo = {DEV_MODEL_NAME: self._upload_dev_model(clients.s3)}
            self.api_key = self._dev_api_key()
            clients.dynamodb.put_item(
                **job_table.put_api_key(
                    self.resources.table_name, self.api_key, name="dev", now=time.time()
                )
            )
        finally:
            clients.close()

    def _upload_dev_model(self, s3: Any) -> str:
        assert self.resources is not None
        uri = f"s3://{self.resources.bucket_name}/models/{DEV_MODEL_NAME}"
        upload_model(ensure_dev_model(self.home), uri, s3)
        return uri

    def _dev_api_key(self) -> str:
        # Stable across restarts, so scripts and a second terminal keep working.
        key_file = self.home / "dev-api-key"
        if not key_file.is_file():
            key_file.write_text(f"hr-dev-{secrets.token_urlsafe(18)}")
            key_file.chmod(0o600)
        return key_file.read_text().strip()

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment every Headrace process of this stack runs with."""
        assert self.resources is not None
        return {
            **os.environ,
            **MOTO_ENV,
            **settings_overrides(self.resources),
            "HEADRACE_AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "HEADRACE_MODEL_ZOO": json.dumps(self.model_zoo),
            "HEADRACE_DEFAULT_MODEL": DEV_MODEL_NAME,
            "HEADRACE_MODEL_CACHE_DIR": str(self.home / "model-cache"),
            "HEADRACE_WEBSOCKET_MANAGEMENT_URL": self.base_url + "/ws" if self.base_url else "",
            # A worker lets its long poll finish before it stops: keep polls short locally so
            # Ctrl-C is quick (empty receives cost nothing here).
            "HEADRACE_RECEIVE_WAIT_SECONDS": "2",
            # Webhooks to a receiver on this machine (plain http to loopback): dev only.
            "HEADRACE_WEBHOOK_ALLOW_LOOPBACK": "true",
            **self.options.settings_env,
            **(extra or {}),
        }

    def start_event_sources(self) -> None:
        """Play the template's event source mappings (headrace/dev/event_sources.py)."""
        assert self.resources is not None
        resources = json.dumps(self.resources.attributes)
        command = [sys.executable, "-m", "headrace.dev.event_sources", "--resources", resources]
        self._event_sources = self._spawn(command, "event-sources", self.env())

    def start_gateway(self) -> None:
        port = self.options.gateway_port or free_port(self.options.host)
        if port and not _port_free(self.options.host, port):
            fallback = free_port(self.options.host)
            logger.warning("port %d is taken; the gateway uses %d", port, fallback)
            port = fallback
        self.base_url = f"http://{self.options.host}:{port}"
        command = [
            sys.executable,
            "-m",
            "headrace.cli.main",
            "gateway",
            "--host",
            self.options.host,
        ]
        self._gateway = self._spawn([*command, "--port", str(port)], "gateway", self.env())
        _wait_http(self.base_url + "/", self._gateway, timeout=30)

    def start_worker(self, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = self._spawn_worker(len(self.workers), extra_env)
        self.workers.append(process)
        self._worker_slots.append(WorkerSlot(extra_env, started_at=time.monotonic()))
        return process

    def _spawn_worker(
        self, index: int, extra_env: Mapping[str, str] | None
    ) -> subprocess.Popen[bytes]:
        return self.spawn_worker(f"worker-{index + 1}", extra_env)

    def spawn_worker(
        self, name: str, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a worker process logging as `name`, with an ECS agent endpoint of its own (a
        task id per process, as ECS gives every task its own). The caller keeps track of it."""
        if self.ecs_agent is None:
            self.ecs_agent = LocalEcsAgent(self.options.host)
            self.ecs_agent.start()
        task = f"{name}-{len(self.worker_tasks) + 1}"
        env = self.env({"ECS_AGENT_URI": self.ecs_agent.uri(task), **(extra_env or {})})
        process = self._spawn([sys.executable, "-m", "worker"], name, env)
        self.worker_tasks[process.pid] = task
        return process

    def replace_dead_workers(self) -> None:
        """Start a worker in the place of each one that has exited, as ECS replaces a stopped
        task; call it now and then. See STABLE_WORKER_SECONDS for the delay."""
        now = time.monotonic()
        for index, slot in enumerate(self._worker_slots):
            process = self.workers[index]
            if process.poll() is None:
                continue
            if slot.replace_at is None:
                delay = slot.restart_delay(now)
                slot.replace_at = now + delay
                logger.warning(
                    "worker-%d exited with status %s; a new one starts in %.0f s",
                    index + 1,
                    process.returncode,
                    delay,
                )
            if now >= slot.replace_at:
                self.workers[index] = self._spawn_worker(index, slot.extra_env)
                slot.started_at, slot.replace_at = now, None
                logger.info("worker-%d started again (pid %d)", index + 1, self.workers[index].pid)

    def worker_log(self, index: int) -> Path:
        return self.logs_dir / f"worker-{index + 1}.log"

    def wait_for_worker(self, timeout: float = 60.0) -> None:
        """Until the model endpoints list the dev model as served (a worker is past readiness)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.workers:
                if process.poll() is not None:
                    raise StackError(f"a worker exited with status {process.returncode}")
            request = urllib.request.Request(
                self.base_url + routes.MODEL_ENDPOINTS, headers={"x-api-key": self.api_key}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    endpoints = json.loads(response.read())["model_endpoints"]
                if any(e["served"] for e in endpoints):
                    return
            except (urllib.error.URLError, OSError, KeyError, ValueError):
                pass
            time.sleep(0.2)
        raise StackError(f"no worker became ready within {timeout:g}s")

    def _spawn(self, command: list[str], name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        output: IO[bytes] | None = None
        if self.options.log_to_files:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            output = (self.logs_dir / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                preexec_fn=parent_death_signal(),  # children die with the stack
                # Own process group: Ctrl-C reaches only `headrace dev`, which stops workers
                # first (they release their jobs), then the gateway, then the AWS endpoint.
                process_group=0,
            )
        finally:
            if output is not None:
                output.close()

    # ---- what a second terminal reads -------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/ws"

    def write_state(self) -> Path:
        """Record base_url, api_key, model and endpoints where the client looks for them, and
        the table and region where `headrace keys` manages the stack's keys."""
        assert self.resources is not None
        path = dev_state_path(self.home)
        state = {
            "base_url": self.base_url,
            "ws_url": self.ws_url,
            "api_key": self.api_key,
            "key_id": public_key_id(job_table.hash_api_key(self.api_key)),
            "event_bus_name": self.resources.event_bus_name,
            "intake_queue_url": self.resources.intake_queue_url,
            "default_model": DEV_MODEL_NAME,
            "aws_endpoint_url": self.aws_endpoint_url,
            "table_name": self.resources.table_name,
            "region": self.resources.region,
            "pid": os.getpid(),
        }
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)
        return path

    def remove_state(self) -> None:
        state = read_dev_state(self.home)
        if state.get("pid") == os.getpid():
            dev_state_path(self.home).unlink(missing_ok=True)


def ensure_dev_model(home: Path) -> Path:
    """The dev model under home/models, built once and rebuilt only when its recipe changes."""
    model_dir = home / "models" / DEV_MODEL_NAME
    stamp_file = model_dir.with_suffix(".stamp")
    recipe = _recipe_fingerprint()
    stamp = stamp_file.read_text() if stamp_file.is_file() else ""
    if not model_dir.is_dir() or stamp != f"{recipe}:{artifact_digest(model_dir)}":
        logger.info("building the dev model (once)", extra={"path": str(model_dir)})
        build_dev_model(model_dir)
        stamp_file.write_text(f"{recipe}:{artifact_digest(model_dir)}")
    return model_dir


def _recipe_fingerprint() -> str:
    package = Path(devmodel.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")) + sorted(package.glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_http(url: str, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{url} process exited with status {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise StackError(f"{url} did not answer within {timeout:g}s")
