"""Helpers for the scheduler tests with the real engine (tests/unit/test_scheduler.py and
tests/e2e/test_scheduler_burst.py): a runner over the dev model, greedy requests, the batches
it started, and a runner serving while a scenario runs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from headrace.core.contracts import CompletionRequest
from worker.decoding import TextCodec
from worker.engine import Engine
from worker.scheduler import ModelRunner


def runner(engine: Engine, dev_model_dir: Path, *, hold: float = 2.0) -> ModelRunner:
    codec = TextCodec.from_file(
        dev_model_dir / "tokenizer.json", bos_token=engine.bos_token, eos_token=engine.eos_token
    )
    return ModelRunner(
        "dev",
        engine,
        codec,
        max_batch_size=8,
        max_batch_wait=0.01,
        max_batch_hold=hold,
        prefetch_per_replica=16,
    )


def greedy(prompt: str, tokens: int) -> CompletionRequest:
    return CompletionRequest(prompt=prompt, max_new_tokens=tokens, temperature=0)


def batches(caplog: pytest.LogCaptureFixture) -> list[list[str]]:
    return [r.requests for r in caplog.records if r.getMessage() == "batch started"]  # type: ignore[attr-defined]


async def serving(model: ModelRunner, body: Any) -> Any:
    task = asyncio.create_task(model.serve())
    try:
        return await asyncio.wait_for(body(), 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
