"""The scheduler with the real engine under a burst: a lone long job gives way and loses
nothing. A load test (a 3000-token job, twice, and a burst beside it): it runs with the e2e
tests, not the fast ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scheduling import batches, greedy, runner, serving
from worker.engine import Engine, EngineConfig
from worker.scheduler import BURST, Decoded


@pytest.fixture(scope="module")
def engine(dev_model_dir: Path) -> Iterator[Engine]:
    loaded = Engine(dev_model_dir, EngineConfig("cpu", "default", 2, 1))
    yield loaded
    loaded.close()


def test_a_lone_job_gives_way_to_a_burst_and_loses_nothing(
    engine: Engine, dev_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alone = runner(engine, dev_model_dir)
    undisturbed = asyncio.run(
        serving(alone, lambda: alone.complete("first", greedy("The mill", 3000)))
    )
    model = runner(engine, dev_model_dir)

    async def body() -> Decoded:
        first = asyncio.create_task(model.complete("first", greedy("The mill", 3000)))
        await asyncio.sleep(0.2)  # it is decoding, on its own
        burst = [
            asyncio.create_task(model.complete(f"b{i}", greedy("The mill", 40)))
            for i in range(BURST)
        ]
        await asyncio.gather(*burst)
        return await first

    caplog.set_level(logging.INFO, logger="headrace.scheduler")
    result = asyncio.run(serving(model, body))
    assert "batch gives way to a burst" in [r.getMessage() for r in caplog.records]
    started = batches(caplog)
    assert started[0] == ["first"]
    assert any("first" in b for b in started[1:])  # back among the others, planned with them
    assert sorted(r for b in started[1:] for r in b if r != "first") == [
        f"b{i}" for i in range(BURST)
    ]
    # Restarted from its own tokens, the job says exactly what it would have said alone.
    assert result.output == undisturbed.output
    assert result.output.num_completion_tokens == 3000
