"""Guided jobs in the scheduler: each runs alone on a replica, stepped by worker/guided.py.

A guided job cannot share an engine batch: the engine samples a batch with one set of options
and decodes it in one call, where a guided job is stopped and steered token by token. Its
tokens go through the same ItemDecoder as any job's, so its stream, stop sequences, limits,
halts (a cancel, its deadline) and log probs behave alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

import numpy as np

from headrace.core.contracts import CompletionRequest
from headrace.core.guides import guide_field
from headrace.core.logs import request_context
from worker.decoding import ItemDecoder
from worker.engine import SamplingParams, Step
from worker.failures import DecodeFailed, RequestRefused
from worker.guided import GuidedEngine, GuideFailed, GuideRefused, Guides, MatchedDecode, choose
from worker.progress import Watch

logger = logging.getLogger("headrace.scheduler")


class Planned(Protocol):
    @property
    def request(self) -> CompletionRequest: ...


class GuidedJob(Planned, Protocol):
    @property
    def request_id(self) -> str: ...
    @property
    def prompt(self) -> list[str]: ...
    @property
    def decoder(self) -> ItemDecoder: ...
    @property
    def params(self) -> SamplingParams: ...
    @property
    def future(self) -> asyncio.Future[Any]: ...
    @property
    def watch(self) -> Watch | None: ...


Job = TypeVar("Job", bound=GuidedJob)
Batched = TypeVar("Batched", bound=Planned)


def is_guided(request: CompletionRequest) -> bool:
    return guide_field(request) is not None


def alone_if_guided(batch: list[Batched]) -> list[Batched]:
    """A batch as planned, or its first guided job alone (the others wait for the next)."""
    guided = [job for job in batch if is_guided(job.request)]
    return guided[:1] or batch


def run_guided(
    engine: GuidedEngine,
    guides: Guides,
    request: CompletionRequest,
    context: list[str],
    resumed: Sequence[int],
    params: SamplingParams,
    feed: Callable[[Step], bool],
) -> None:
    """Decode a guided request after `context` (its prompt, then the `resumed` tokens an
    earlier attempt made), handing each token to `feed`. Blocks: run it on a replica's
    thread."""
    codec = guides.codec
    if request.guided_choice is not None:
        # An earlier attempt streamed the start of a choice: only choices with that start fit.
        choices = [
            c
            for c in request.guided_choice
            if codec.tokenizer.encode(c, add_special_tokens=False).ids[: len(resumed)]
            == list(resumed)
        ]
        if not choices:
            raise GuideFailed("no choice starts with the tokens an earlier attempt streamed")
        prompt = context[: len(context) - len(resumed)]
        token_ids, log_probs = choose(engine, codec, prompt, choices)
        for token_id, log_prob in list(zip(token_ids, log_probs, strict=True))[len(resumed) :]:
            if feed(Step(0, token_id, log_prob, False)):
                return
        feed(Step(0, codec.eos_id, None, False))
        return
    matcher = guides.matcher(request)
    if not matcher.consume_tokens(list(resumed)):
        raise GuideFailed("the tokens an earlier attempt made do not match the guide")
    MatchedDecode(
        engine,
        matcher,
        codec.eos_id,
        codec.token,
        params,
        feed,
        use_forced=not request.return_token_log_probs,
        rng=np.random.default_rng(),
    ).run(list(context), request.max_new_tokens - len(resumed))


async def decode_guided(
    engine: GuidedEngine,
    guides: Guides,
    executor: Executor,
    job: Job,
    resolve: Callable[[Job], None],
) -> None:
    """Run a guided job on a replica's thread; `resolve` stores its result."""
    decoder = job.decoder
    resumed = list(decoder.token_ids)

    def feed(step: Step) -> bool:
        if job.future.cancelled():  # its caller let go of it (e.g. lost the lease)
            return True
        stop = decoder.on_step(step)
        if job.watch is not None:
            job.watch.signal.notify()
        return stop or decoder.finished

    field = guide_field(job.request)
    logger.info("guided job started", extra={"guide": field, "request_id": job.request_id})
    try:
        await asyncio.get_running_loop().run_in_executor(
            executor,
            lambda: run_guided(
                engine, guides, job.request, list(job.prompt), resumed, job.params, feed
            ),
        )
    except GuideRefused as e:
        if not job.future.done():
            job.future.set_exception(RequestRefused(e.detail))
        return
    except Exception as e:
        with request_context(job.request_id):
            logger.exception("guided decoding failed")
        if not job.future.done():
            job.future.set_exception(DecodeFailed(f"guided decoding error: {e}"))
        return
    resolve(job)
