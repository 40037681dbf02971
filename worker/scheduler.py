"""Dynamic batching: held jobs are grouped into engine batches, one per free replica.

CTranslate2 cannot add a request to a running batch, so the scheduler waits for a free replica
first and only then forms a batch from everything that arrived meanwhile (up to the maximum
batch size, after at most `max_batch_wait` for company). Items that finish early stop in the
callback, so a short job never decodes past its own end.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from headrace.contracts import CompletionOutput, CompletionRequest, TokenOutput
from headrace.errors import HeadraceError
from headrace.logs import request_context
from worker.decoding import ItemDecoder, TextCodec, sampling_params
from worker.engine import Engine, SamplingParams, Step

logger = logging.getLogger("headrace.scheduler")


class DecodeFailed(HeadraceError):
    """The engine failed on a batch (not the request's fault as far as we can tell)."""


@dataclass(frozen=True)
class Decoded:
    output: CompletionOutput
    first_token_at: float | None


class ProgressSignal:
    """Wakes a coroutine when a decoder made progress, at most once per wait.

    `notify` runs on a CTranslate2 thread once per token; it crosses into the event loop only
    when the waiter is armed, so a fast decode costs one loop wake-up per flush, not per token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._armed = True

    def notify(self) -> None:
        if self._armed:
            self._armed = False
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()
        # Re-armed before the waiter reads the decoder, so no progress goes unnoticed.
        self._armed = True


@dataclass
class Watch:
    """Lets the caller of `complete` follow the job's decoder while it runs."""

    signal: ProgressSignal
    decoder: ItemDecoder | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # result or failure is set


@dataclass(frozen=True)
class Resume:
    """What an earlier attempt generated and streamed: decoding continues after it."""

    token_ids: list[int]
    tokens: list[TokenOutput]


@dataclass
class _Pending:
    request_id: str
    request: CompletionRequest
    future: asyncio.Future[Decoded]
    prompt: list[str]  # what the engine is fed: prompt tokens, then any resumed tokens
    decoder: ItemDecoder
    watch: Watch | None = None
    skipped: int = 0  # batches formed without it; bounds how long select_batch can pass it over
    params: SamplingParams = field(init=False)

    def __post_init__(self) -> None:
        self.params = sampling_params(self.request)

    @property
    def remaining_tokens(self) -> int:
        return max(1, self.request.max_new_tokens - self.decoder.num_completion_tokens)


class ModelRunner:
    """Decodes requests for one loaded model."""

    def __init__(
        self,
        name: str,
        engine: Engine,
        codec: TextCodec,
        *,
        max_batch_size: int,
        max_batch_wait: float,
    ) -> None:
        self.name = name
        self.engine = engine
        self.codec = codec
        self.max_batch_size = max_batch_size
        self.max_batch_wait = max_batch_wait
        self.replicas = engine.inter_threads
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._free_replicas = asyncio.Semaphore(self.replicas)
        self._executor = ThreadPoolExecutor(self.replicas, thread_name_prefix=f"decode-{name}")
        self._batches: set[asyncio.Task[None]] = set()

    async def complete(
        self,
        request_id: str,
        request: CompletionRequest,
        *,
        watch: Watch | None = None,
        resume: Resume | None = None,
    ) -> Decoded:
        future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        prompt = self.codec.prompt_tokens(request.prompt)
        decoder = ItemDecoder(self.codec, request, len(prompt))
        if resume is not None:
            decoder.resume(resume.token_ids, resume.tokens)
            prompt += [self.codec.token(i) for i in resume.token_ids]
        if watch is not None:
            watch.decoder = decoder
        self._pending.append(_Pending(request_id, request, future, prompt, decoder, watch))
        self._arrived.set()
        return await future

    def warm_up(self) -> None:
        """Run one tiny decode so the first real request does not pay for lazy initialisation."""
        request = CompletionRequest(prompt="warm up", max_new_tokens=2, temperature=0)
        decoder = ItemDecoder(self.codec, request, 0)
        self.engine.generate(
            [self.codec.prompt_tokens(request.prompt)],
            params=sampling_params(request),
            max_new_tokens=request.max_new_tokens,
            return_log_probs=False,
            on_step=decoder.on_step,
        )

    async def serve(self) -> None:
        """Form and launch batches until cancelled."""
        try:
            while True:
                await self._free_replicas.acquire()
                try:
                    batch = await self._next_batch()
                except BaseException:
                    self._free_replicas.release()
                    raise
                task = asyncio.create_task(self._run_batch(batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
        finally:
            for pending in self._pending:
                pending.future.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _next_batch(self) -> list[_Pending]:
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._pending) < self.max_batch_size and self.max_batch_wait > 0:
            # A replica is free but the batch is not full: give jobs arriving right now a
            # moment to join, since nothing can join once the batch runs.
            await asyncio.sleep(self.max_batch_wait)
        batch = select_batch(
            [p for p in self._pending if not p.future.cancelled()], self.max_batch_size
        )
        chosen = {id(p) for p in batch}
        self._pending = collections.deque(
            p for p in self._pending if id(p) not in chosen and not p.future.cancelled()
        )
        for passed_over in self._pending:
            passed_over.skipped += 1
        if self._pending:
            self._arrived.set()
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            if batch:
                await self._decode(batch)
        finally:
            self._free_replicas.release()

    async def _decode(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for pending in batch:
            if pending.watch is not None:
                pending.watch.started.set()
        failures: dict[int, Exception] = {}

        def on_step(step: Step) -> bool:
            # Runs on a CTranslate2 thread. An exception here would abort the whole batch,
            # so a failing item is stopped and failed alone.
            pending = batch[step.index]
            try:
                stop = pending.decoder.on_step(step)
                if pending.watch is not None:
                    pending.watch.signal.notify()
                if stop and pending.decoder.finished:
                    # Its result is ready now: the job need not wait for the rest of the batch.
                    loop.call_soon_threadsafe(self._resolve, pending)
                return stop
            except Exception as e:
                failures[step.index] = e
                return True

        logger.info(
            "batch started",
            extra={
                "model": self.name,
                "batch_size": len(batch),
                "prompt_tokens": [len(p.prompt) for p in batch],
                "requests": [p.request_id for p in batch],
            },
        )
        try:
            await loop.run_in_executor(
                self._executor,
                lambda: self.engine.generate(
                    [p.prompt for p in batch],
                    params=batch[0].params,
                    max_new_tokens=max(p.remaining_tokens for p in batch),
                    return_log_probs=any(p.request.return_token_log_probs for p in batch),
                    on_step=on_step,
                ),
            )
        except Exception as e:
            logger.exception("engine failed on a batch", extra={"model": self.name})
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(DecodeFailed(f"engine error: {e}"))
            return
        for index, pending in enumerate(batch):
            if index in failures and not pending.future.done():
                with request_context(pending.request_id):
                    logger.error("decode failed: %r", failures[index])
                pending.future.set_exception(DecodeFailed(f"decode error: {failures[index]}"))
            else:
                self._resolve(pending)

    def _resolve(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        decoder = pending.decoder
        pending.future.set_result(Decoded(decoder.finish(), decoder.first_token_at))
        if pending.watch is not None:
            pending.watch.signal.notify()  # the final snapshot, if the engine ended the item
            pending.watch.ended.set()


MAX_SKIPS = 2
# Most prompt tokens a batch may span. A batch of 16 in the benchmark's best CTranslate2
# batching (its 64 jobs sorted by prompt length, cut in four) spans about 60; a batch of 4
# spanning 200 took longer than a batch of 16 spanning 56 (bench/, 2 CPU cores).
MAX_PROMPT_SPREAD = 64


def select_batch(pending: list[_Pending], max_batch_size: int) -> list[_Pending]:
    """The jobs that batch best together, without starving any.

    CTranslate2 forwards the prompts of a batch in one pass only up to the shortest prompt;
    the rest is fed one decoding step at a time, so one long prompt among short ones costs the
    whole batch hundreds of steps. So a batch is a window of similar prompt lengths, spanning
    at most MAX_PROMPT_SPREAD tokens: among the jobs with the same sampling options, the
    fullest such window (then the tightest). A job passed over MAX_SKIPS times anchors the
    next batch, its window chosen around it, so none waits for ever.
    """
    if not pending:
        return []
    overdue = [p for p in pending if p.skipped >= MAX_SKIPS]
    anchor = overdue[0] if overdue else pending[0]
    alike = sorted((p for p in pending if p.params == anchor.params), key=lambda p: len(p.prompt))
    lengths = [len(p.prompt) for p in alike]
    at = alike.index(anchor)
    best: tuple[int, int, int] | None = None  # (-size, spread, start)
    for start in range(at + 1 if overdue else len(alike)):
        end = start
        while (
            end + 1 < len(alike)
            and end + 1 - start < max_batch_size
            and lengths[end + 1] - lengths[start] <= MAX_PROMPT_SPREAD
        ):
            end += 1
        if overdue and end < at:
            continue  # must contain the anchor
        candidate = (-(end - start + 1), lengths[end] - lengths[start], start)
        best = candidate if best is None else min(best, candidate)
    assert best is not None
    size, _, start = best
    return alike[start : start - size]
