"""A queued job says whether a worker serves its model; a busy worker is protected from scale-in.

One stack with no worker at first: a job submitted then is `scaling_from_zero`. Then one worker
that holds two jobs at most (a third waits in the queue), clearing its task protection one
second after it goes idle, whose requests the dev stack's ECS agent records.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.dev.stack import LocalStack
from tests.e2e.control_support import CONTROL_SETTINGS, LONG, cancel, view, wait_final
from tests.e2e.lease_support import wait_until
from tests.e2e.support import Api, make_stack

WORKER_ENV = {**CONTROL_SETTINGS, "HEADRACE_TASK_PROTECTION_IDLE_SECONDS": "1"}


@pytest.fixture(scope="module")
def fleet(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with make_stack(model_home, tmp_path_factory.mktemp("capacity-logs"), workers=0) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(fleet: LocalStack) -> Api:
    return Api(fleet.base_url, fleet.api_key)


@pytest.fixture(scope="module")
def worker_task(fleet: LocalStack) -> str:
    """The task id, at the local ECS agent, of the stack's one worker, started on first use."""
    process = fleet.start_worker(WORKER_ENV)
    fleet.wait_for_worker()
    return fleet.worker_tasks[process.pid]


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def test_a_job_no_worker_serves_says_it_waits_for_a_scale_up(api: Api) -> None:
    request_id = api.submit({"prompt": "The mill", "max_new_tokens": 4})
    job = view(api, request_id)
    assert job["status"] == "QUEUED"
    assert job["capacity"] == {
        "state": "scaling_from_zero",
        "since": job["created_at"],
        "workers": 0,
    }
    assert cancel(api, request_id)[0] == 200
    assert "capacity" not in view(api, request_id)  # final: nothing more to say or to read


def test_protection_is_set_while_jobs_run_and_cleared_once_idle(
    api: Api, fleet: LocalStack, worker_task: str
) -> None:
    agent = fleet.ecs_agent
    assert agent is not None
    # The cancelled job's message reached the new worker too: let it go idle, then count.
    wait_until(lambda: not agent.protected(worker_task), 15, "an idle worker")
    before = len(agent.requests(worker_task))
    first = api.submit(LONG)
    wait_until(lambda: view(api, first)["status"] == "RUNNING", 30, "the first job running")
    wait_until(lambda: agent.protected(worker_task), 5, "protection while the job runs")
    second = api.submit({**LONG, "prompt": "The wheel"})
    wait_until(lambda: view(api, second)["status"] == "RUNNING", 30, "the second job running")
    for request_id in (first, second):
        assert cancel(api, request_id)[0] in (200, 202)
        assert wait_final(api, request_id)["status"] == "CANCELLED"
    wait_until(lambda: not agent.protected(worker_task), 15, "the protection cleared")
    # Two jobs, one protection: set once, cleared once, for no more than the setting's minutes.
    requests = agent.requests(worker_task)[before:]
    assert [(r.enabled, r.expires_in_minutes) for r in requests] == [(True, 10), (False, None)]
    idle_for = requests[1].at - _finished_at(api, second)
    assert idle_for >= 1.0 - 0.05, requests  # the idle wait, not a call per job


def test_a_job_behind_a_busy_worker_sees_the_workers_and_the_backlog(
    api: Api, fleet: LocalStack, worker_task: str
) -> None:
    running = [api.submit({**LONG, "prompt": p}) for p in ("The river", "The stone")]
    for request_id in running:
        wait_until(lambda r=request_id: view(api, r)["status"] == "RUNNING", 30, "jobs running")
    waiting = api.submit({**LONG, "prompt": "The gate"})
    submitted = time.time()

    def counted() -> dict[str, Any] | None:
        capacity: dict[str, Any] | None = view(api, waiting).get("capacity")
        at = capacity and capacity.get("backlog_counted_at")
        return capacity if at and epoch(at) > submitted else None

    wait_until(counted, 30, "a count of the backlog after the submit")  # worker renews: ~2 s
    capacity = counted()
    assert capacity is not None
    assert capacity["state"] == "serving" and capacity["workers"] == 1
    assert capacity["backlog_ahead"] == 1  # itself: nothing else waits in the lane
    assert "since" not in capacity
    for request_id in (*running, waiting):
        cancel(api, request_id)
        assert wait_final(api, request_id)["status"] == "CANCELLED"


def _finished_at(api: Api, request_id: str) -> float:
    return epoch(view(api, request_id)["finished_at"])


def test_the_agent_refuses_what_ecs_refuses(fleet: LocalStack) -> None:
    assert fleet.ecs_agent is not None
    url = fleet.ecs_agent.uri("task-x") + "/task-protection/v1/state"
    for body in ({"ExpiresInMinutes": 5}, {"ProtectionEnabled": True, "ExpiresInMinutes": 0}):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert json.loads(refused.value.read())["error"]["Code"] == "InvalidParameterException"
        refused.value.close()
    assert fleet.ecs_agent.requests("task-x") == []
