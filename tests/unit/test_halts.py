"""A halt in the decoder and the scheduler, with the real engine (the dev model): the item stops
at its next token, its batch mates go on untouched, and a job waiting for a batch ends at once.
(Pure pieces: tests/unit/test_job_control.py; over the wire:
tests/e2e/control/test_cancel_e2e.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from headrace.core.contracts import CompletionRequest, JobStatus
from tests.scheduling import greedy, runner, serving
from worker.decoding import ItemDecoder, TextCodec
from worker.engine import Engine, EngineConfig, Step
from worker.halts import Halt
from worker.progress import ProgressSignal, Watch
from worker.scheduler import Decoded

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def engine(dev_model_dir: Path) -> Iterator[Engine]:
    loaded = Engine(dev_model_dir, EngineConfig("cpu", "default", 1, 1))
    yield loaded
    loaded.close()


def test_the_decoder_stops_at_the_token_after_the_halt_with_what_it_made(
    dev_model_dir: Path,
) -> None:
    tokenizer = Tokenizer.from_file(str(dev_model_dir / "tokenizer.json"))
    codec = TextCodec(tokenizer, bos_token=EOS, eos_token=EOS)
    halt = Halt()
    decoder = ItemDecoder(codec, CompletionRequest(prompt="x", max_new_tokens=100), 1, stopper=halt)
    ids = tokenizer.encode(" The miller opens the wheel").ids
    assert [decoder.on_step(Step(0, i, None, False)) for i in ids[:3]] == [False] * 3
    halt.request(JobStatus.CANCELLED)
    assert decoder.on_step(Step(0, ids[3], None, False)) is True
    assert (halt.stopped, decoder.halted, decoder.finished) == (JobStatus.CANCELLED,) * 2 + (True,)
    assert halt.stopped_at is not None
    assert decoder.finish().text == tokenizer.decode(ids[:4])
    progress = decoder.progress(since=0)
    assert progress.finished and progress.halted is JobStatus.CANCELLED


def test_a_halted_item_leaves_its_batch_and_the_mate_decodes_as_alone(
    engine: Engine, dev_model_dir: Path
) -> None:
    model = runner(engine, dev_model_dir)

    async def body() -> tuple[Decoded, Decoded, Decoded, int]:
        alone = await model.complete("alone", greedy("The mill", 600))
        halt = Halt()
        watch = Watch(ProgressSignal(asyncio.get_running_loop()))
        long = asyncio.create_task(
            model.complete("long", greedy("The river", 3000), watch=watch, halt=halt)
        )
        mate = asyncio.create_task(model.complete("mate", greedy("The mill", 600)))
        await watch.started.wait()
        while watch.progress(since=1 << 62).num_tokens < 50:
            await watch.signal.wait()
        learned = watch.progress(since=1 << 62).num_tokens
        halt.request(JobStatus.CANCELLED)
        return alone, await long, await mate, learned

    alone, long, mate, learned = asyncio.run(serving(model, body))
    assert learned < long.output.num_completion_tokens <= learned + 2
    assert mate.output == alone.output


def test_a_job_halted_while_it_waits_for_a_batch_ends_at_once(
    engine: Engine, dev_model_dir: Path
) -> None:
    model = runner(engine, dev_model_dir)

    async def body() -> tuple[Decoded, Watch]:
        # Nothing serves the runner: the job waits for a batch, past its deadline.
        halt = Halt(deadline=time.time() - 0.001)
        watch = Watch(ProgressSignal(asyncio.get_running_loop()))
        waiting = asyncio.create_task(
            model.complete("late", greedy("Water", 20), watch=watch, halt=halt)
        )
        await asyncio.sleep(0)  # it runs to where it waits for a batch
        assert watch.source is not None and not waiting.done()
        model.halt_waiting()  # what the worker's deadline timer calls
        return await asyncio.wait_for(waiting, 5), watch

    decoded, watch = asyncio.run(body())
    assert decoded.output.num_completion_tokens == 0 and decoded.output.text == ""
    assert watch.started.is_set() and watch.ended.is_set()
    assert watch.progress(since=0).halted is JobStatus.TIMED_OUT
