"""API keys end to end: create, use, revoke. Revoking closes the key's open WebSocket connections
at once, HTTP refuses it once the gateway's key cache lapses, other keys keep working.

A stack of this module's own (no worker: nothing here decodes) whose gateway trusts a key it
found for CACHE_SECONDS, instead of 60 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from headrace.api import keys
from headrace.api.services import ApiServices, build_services
from headrace.core import routes
from headrace.core.errors import NotFound
from headrace.core.settings import Settings
from headrace.core.tables import api_keys as key_table
from headrace.core.tables import connections as connection_table
from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_ENV
from headrace.dev.stack import LocalStack, StackOptions
from tests.e2e.support import FAST_PARAMETERS, FAST_SETTINGS, Api

ROOT = Path(__file__).resolve().parents[2]
CACHE_SECONDS = 1.0
CLOSE_BOUND_SECONDS = 5.0  # generous: the close takes one management call and one frame
T = TypeVar("T")


@pytest.fixture(scope="module")
def key_stack(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    options = StackOptions(
        home=model_home,
        logs_dir=tmp_path_factory.mktemp("key-stack-logs"),
        gateway_port=0,
        parameters=dict(FAST_PARAMETERS),
        settings_env={**FAST_SETTINGS, "HEADRACE_API_KEY_CACHE_SECONDS": str(CACHE_SECONDS)},
    )
    with LocalStack(options) as stack:
        stack.start(workers=0)
        yield stack


@pytest.fixture(scope="module")
def services(key_stack: LocalStack) -> Iterator[ApiServices]:
    """What an operator's `headrace keys` builds, in this process, over the wire to moto."""
    assert key_stack.resources is not None
    with pytest.MonkeyPatch.context() as env:
        for name, value in MOTO_ENV.items():
            env.setenv(name, value)
        settings = Settings(
            aws_endpoint_url=key_stack.aws_endpoint_url,
            region=key_stack.resources.region,
            table_name=key_stack.resources.table_name,
        )
        built = build_services(settings)
        yield built
        built.dynamodb.close()
        built.sqs.close()


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(factory(), 60))


def http_status(stack: LocalStack, api_key: str) -> tuple[int, Any]:
    return Api(stack.base_url, api_key).call("GET", routes.MODEL_ENDPOINTS)


def listed_connections(services: ApiServices, key_id: str) -> list[str]:
    request = key_table.query_key_connections(services.settings.table_name, key_id)
    items = services.dynamodb.query(**request)["Items"]
    return [key_table.KeyConnection.from_item(item).connection_id for item in items]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check()` held, polling; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout:g}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


async def open_socket(
    session: aiohttp.ClientSession, stack: LocalStack, api_key: str
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(stack.ws_url, headers={"x-api-key": api_key})


async def answer(ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(json.dumps(frame))
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    reply: dict[str, Any] = json.loads(message.data)
    return reply


COMPLETE = {"action": "complete", "model": DEV_MODEL_NAME, "prompt": "The river"}


async def closed_within(ws: aiohttp.ClientWebSocketResponse, started: float) -> float:
    message = await ws.receive(timeout=CLOSE_BOUND_SECONDS)
    # What a DELETE @connections closes a connection with.
    assert (message.type, message.data, message.extra) == (
        aiohttp.WSMsgType.CLOSE,
        1000,
        "Connection deleted",
    ), message
    return time.monotonic() - started


def test_revoking_a_key_closes_its_sockets_at_once_and_refuses_it_after_the_cache(
    key_stack: LocalStack, services: ApiServices
) -> None:
    revoked, revoked_id = keys.create_key(services, "to revoke")
    kept, kept_id = keys.create_key(services, "kept")
    assert http_status(key_stack, revoked)[0] == http_status(key_stack, kept)[0] == 200

    async def scenario() -> tuple[keys.Revocation, float]:
        async with aiohttp.ClientSession() as session:
            doomed = await open_socket(session, key_stack, revoked)
            other = await open_socket(session, key_stack, kept)
            for ws in (doomed, other):
                assert (await answer(ws, COMPLETE))["type"] == "accepted"
            assert len(listed_connections(services, revoked_id)) == 1

            started = time.monotonic()
            revocation = await asyncio.to_thread(keys.revoke_key, services, revoked)
            closed_after = await closed_within(doomed, started)
            assert (await answer(other, COMPLETE))["type"] == "accepted"
            await other.close()
            return revocation, closed_after

    revocation, closed_after = run(scenario)
    assert closed_after < CLOSE_BOUND_SECONDS
    assert (revocation.key_id, revocation.name) == (revoked_id, "to revoke")
    assert (revocation.closed, revocation.gone, revocation.failed) == (1, 0, 0)
    assert listed_connections(services, revoked_id) == []
    # The other key's connection was listed until its $disconnect, which unlisted it.
    wait_until(lambda: listed_connections(services, kept_id) == [], 10, "kept key unlisted")

    refused_after = wait_until(
        lambda: http_status(key_stack, revoked)[0] == 401, CACHE_SECONDS + 5, "HTTP 401"
    )
    print(f"socket closed {closed_after:.2f}s after revoke; HTTP 401 {refused_after:.2f}s later")
    assert http_status(key_stack, revoked) == (401, {"detail": "unknown API key"})
    assert http_status(key_stack, kept)[0] == 200

    async def reconnect() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await open_socket(session, key_stack, revoked)
            return refused.value.status

    assert run(reconnect) == 401
    with pytest.raises(NotFound):
        keys.revoke_key(services, revoked_id)


def test_a_frame_of_a_key_deleted_without_revoke_gets_401_and_the_socket_closes(
    key_stack: LocalStack, services: ApiServices
) -> None:
    """Should closing a connection fail, its next frame after the cache lapses is refused."""
    api_key, key_id = keys.create_key(services, "deleted by hand")
    bogus = {"action": "subscribe", "request_id": "no-such-request"}

    async def scenario() -> tuple[dict[str, Any], float, str]:
        async with aiohttp.ClientSession() as session:
            ws = await open_socket(session, key_stack, api_key)
            assert (await answer(ws, COMPLETE))["type"] == "accepted"
            (connection_id,) = listed_connections(services, key_id)
            # As an operator did before `headrace keys revoke`: the socket stays open.
            services.dynamodb.delete_item(
                TableName=services.settings.table_name,
                Key=job_table.api_key_id_key(key_id),
            )
            deleted = time.monotonic()
            while True:
                reply = await answer(ws, bogus)
                status = reply["error"]["status_code"]
                if status != 404:  # still trusted: the subscribe finds no such request
                    break
                assert time.monotonic() - deleted < CACHE_SECONDS + 5, "never refused"
                await asyncio.sleep(0.1)
            closed_after = await closed_within(ws, deleted)
            return reply, closed_after, connection_id

    reply, closed_after, connection_id = run(scenario)
    assert reply["request_id"] is None and reply["output"] is None
    assert reply["error"]["status_code"] == 401
    assert reply["error"]["content"]["error"] == "unknown API key"
    assert closed_after < CACHE_SECONDS + CLOSE_BOUND_SECONDS
    # Its $disconnect forgot the connection and unlisted it.
    table = services.settings.table_name

    def forgotten() -> bool:
        found = services.dynamodb.get_item(
            TableName=table, Key=connection_table.connection_key(connection_id), ConsistentRead=True
        )
        return "Item" not in found and listed_connections(services, key_id) == []

    wait_until(forgotten, 10, "connection items deleted")


def headrace(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "headrace.cli.main", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEADRACE_", "AWS_"))}
    return {**env, "HEADRACE_HOME": str(home), **extra}


def test_the_cli_creates_lists_and_revokes_keys_of_the_dev_stack_and_of_a_named_one(
    key_stack: LocalStack, tmp_path: Path
) -> None:
    dev_home, other_home = tmp_path / "dev", tmp_path / "deployed"
    dev_home.mkdir()
    other_home.mkdir()
    state = key_stack.write_state()  # as `headrace dev` records itself, in a home of this test's
    (dev_home / state.name).write_text(state.read_text())
    key_stack.remove_state()
    dev = cli_env(dev_home)

    created = headrace("keys", "create", "--name", "from the cli", "--json", env=dev)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["api_key"].startswith("hr-") and len(key["key_id"]) == 64
    assert key["id"] == "hk_" + key["key_id"]  # the public id: what jobs and events name
    listed = headrace("keys", "list", "--json", env=dev)
    assert listed.returncode == 0, listed.stderr
    assert {"key_id": key["key_id"], "name": "from the cli"}.items() <= next(
        row for row in json.loads(listed.stdout) if row["key_id"] == key["key_id"]
    ).items()
    assert http_status(key_stack, key["api_key"])[0] == 200

    assert key_stack.resources is not None
    deployed = cli_env(
        other_home,
        HEADRACE_TABLE_NAME=key_stack.resources.table_name,
        HEADRACE_REGION=key_stack.resources.region,
        HEADRACE_AWS_ENDPOINT_URL=key_stack.aws_endpoint_url,
        **MOTO_ENV,
    )

    async def revoke_while_connected() -> tuple[subprocess.CompletedProcess[str], float]:
        async with aiohttp.ClientSession() as session:
            ws = await open_socket(session, key_stack, key["api_key"])
            assert (await answer(ws, COMPLETE))["type"] == "accepted"
            started = time.monotonic()
            done = await asyncio.to_thread(headrace, "keys", "revoke", key["key_id"], env=deployed)
            assert done.returncode == 0, done.stderr
            return done, await closed_within(ws, started)

    revoked, closed_after = run(revoke_while_connected)
    assert revoked.stdout == (
        f"revoked key {key['id']} (from the cli); closed 1 open WebSocket connection(s)\n"
    )
    assert closed_after < CLOSE_BOUND_SECONDS + 5  # plus starting a Python process
    again = headrace("keys", "revoke", key["api_key"], env=dev)
    assert (again.returncode, again.stderr) == (1, "headrace: unknown API key or key id\n")
    remaining = headrace("keys", "list", "--json", env=deployed)
    ids = [row["key_id"] for row in json.loads(remaining.stdout)]
    assert key["key_id"] not in ids and ids  # the dev key (and this module's others) remain
    nowhere = headrace("keys", "list", env=cli_env(other_home))
    assert nowhere.returncode == 1 and "start `headrace dev`" in nowhere.stderr
