"""The scheduler with the real engine (the dev model, two replicas): when a free replica starts
or holds for company. (Giving way to a burst, a load of a few thousand tokens:
tests/e2e/test_scheduler_burst.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scheduling import batches, greedy, runner, serving
from worker import scheduler
from worker.engine import Engine, EngineConfig
from worker.scheduler import Decoded


@pytest.fixture(scope="module")
def engine(dev_model_dir: Path) -> Iterator[Engine]:
    loaded = Engine(dev_model_dir, EngineConfig("cpu", "default", 2, 1))
    yield loaded
    loaded.close()


def test_a_lone_job_on_an_idle_worker_starts_without_holding(
    engine: Engine, dev_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = runner(engine, dev_model_dir, hold=30.0)

    async def body() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await model.complete("lone", greedy("The river", 8))
        return loop.time() - start

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    took = asyncio.run(serving(model, body))
    assert batches(caplog) == [["lone"]]
    assert took < 30.0  # it did not wait out the hold meant for bursts


def test_a_busy_worker_holds_a_free_replica_while_jobs_keep_arriving(
    engine: Engine, dev_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = runner(engine, dev_model_dir)

    async def body() -> list[Decoded]:
        # Two long jobs together: a batch that does not give way (only a lone job's does).
        long = [
            asyncio.create_task(model.complete(f"long{i}", greedy("The mill", 1500)))
            for i in range(2)
        ]
        await asyncio.sleep(0.5)  # they have a replica to themselves
        arrivals = []
        for i in range(4):  # one every 0.1 s, closer together than the scheduler's quiet gap
            arrivals.append(asyncio.create_task(model.complete(f"j{i}", greedy("Water", 20))))
            await asyncio.sleep(0.1)
        return [*(await asyncio.gather(*arrivals)), *(await asyncio.gather(*long))]

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    results = asyncio.run(serving(model, body))
    assert [sorted(b) for b in batches(caplog)] == [["long0", "long1"], ["j0", "j1", "j2", "j3"]]
    assert [r.output.num_completion_tokens for r in results[:4]] == [20] * 4


def test_a_full_prefetch_with_nothing_on_its_way_starts_without_holding(
    engine: Engine,
    dev_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the rule, a burst's batch would wait out a 30 s quiet gap.
    monkeypatch.setattr(scheduler, "QUIET_S", 30.0)
    model = runner(engine, dev_model_dir, hold=240.0)
    model.set_intake_full(True)  # the worker may receive no more

    async def body() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(model.complete(f"j{i}", greedy("Water", 8)) for i in range(4)))
        return loop.time() - start

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    took = asyncio.run(serving(model, body))
    assert [sorted(b) for b in batches(caplog)] == [["j0", "j1", "j2", "j3"]]
    assert took < 20.0


def test_a_full_prefetch_still_waits_for_a_job_on_its_way(
    engine: Engine,
    dev_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler, "QUIET_S", 0.05)  # a quiet gap would not wait for it
    model = runner(engine, dev_model_dir)
    model.set_intake_full(True)

    async def body() -> None:
        claiming = model.arrival()  # received, its claim not yet written
        first = [asyncio.create_task(model.complete(f"j{i}", greedy("Water", 8))) for i in range(3)]
        await asyncio.sleep(0.5)
        with claiming:
            last = asyncio.create_task(model.complete("j3", greedy("Water", 8)))
        await asyncio.gather(*first, last)

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    asyncio.run(serving(model, body))
    assert [sorted(b) for b in batches(caplog)] == [["j0", "j1", "j2", "j3"]]


def test_a_burst_is_planned_with_the_replicas_still_decoding_counted_busy(
    engine: Engine, dev_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 64 like jobs and steps of 16 giving 1.15 times the tokens per second of 8: four batches
    # of 16 in two rounds end first. Once the first has started, a plan of the other 48 that
    # counted its replica free would cut them in batches of 8 (three rounds of a cheaper step
    # on two replicas); with that replica busy, 16 still ends first. The last 16 are planned
    # when the second batch ends, beside a third counted by how far it has come: one batch of
    # 16 or two of 8 are both right then, depending on how far the replicas' threads got apart
    # (on a loaded machine, far enough for the 8s).
    model = runner(engine, dev_model_dir)
    model.max_batch_size = 16
    model.step_seconds = {8: 0.040, 16: 0.0696}
    model.set_intake_full(True)

    async def body() -> None:
        await asyncio.gather(*(model.complete(f"j{i}", greedy("Water", 32)) for i in range(64)))

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    asyncio.run(serving(model, body))
    sizes = [len(b) for b in batches(caplog)]
    assert sizes[:3] == [16, 16, 16]
    assert sizes[3:] in ([16], [8, 8])
