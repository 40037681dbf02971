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
    watch: Watch | None = None
    resume: Resume | None = None
    params: SamplingParams = field(init=False)

    def __post_init__(self) -> None:
        self.params = sampling_params(self.request)


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
        self._pending.append(_Pending(request_id, request, future, watch, resume))
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
            await asyncio.sleep(self.max_batch_wait)
        params = self._pending[0].params
        batch: list[_Pending] = []
        kept: collections.deque[_Pending] = collections.deque()
        while self._pending:
            pending = self._pending.popleft()
            if pending.future.cancelled():
                continue
            if len(batch) < self.max_batch_size and pending.params == params:
                batch.append(pending)
            else:
                kept.append(pending)
        self._pending = kept
        if kept:
            self._arrived.set()
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            if batch:
                await self._decode(batch)
        finally:
            self._free_replicas.release()

    async def _decode(self, batch: list[_Pending]) -> None:
        prompts: list[list[str]] = []
        decoders: list[ItemDecoder] = []
        remaining: list[int] = []
        for pending in batch:
            prompt = self.codec.prompt_tokens(pending.request.prompt)
            decoder = ItemDecoder(self.codec, pending.request, len(prompt))
            if pending.resume is not None:
                decoder.resume(pending.resume.token_ids, pending.resume.tokens)
                prompt += [self.codec.token(i) for i in pending.resume.token_ids]
            prompts.append(prompt)
            decoders.append(decoder)
            remaining.append(max(1, pending.request.max_new_tokens - decoder.num_completion_tokens))
            if pending.watch is not None:
                pending.watch.decoder = decoder
                pending.watch.started.set()
        signals = [p.watch.signal if p.watch else None for p in batch]
        failures: dict[int, Exception] = {}

        def on_step(step: Step) -> bool:
            # Runs on a CTranslate2 thread. An exception here would abort the whole batch,
            # so a failing item is stopped and failed alone.
            try:
                stop = decoders[step.index].on_step(step)
                signal = signals[step.index]
                if signal is not None:
                    signal.notify()
                return stop
            except Exception as e:
                failures[step.index] = e
                return True

        loop = asyncio.get_running_loop()
        logger.info(
            "batch started",
            extra={
                "model": self.name,
                "batch_size": len(batch),
                "requests": [p.request_id for p in batch],
            },
        )
        try:
            await loop.run_in_executor(
                self._executor,
                lambda: self.engine.generate(
                    prompts,
                    params=batch[0].params,
                    max_new_tokens=max(remaining),
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
        for index, (pending, decoder) in enumerate(zip(batch, decoders, strict=True)):
            if pending.future.done():
                continue
            with request_context(pending.request_id):
                if index in failures:
                    logger.error("decode failed: %r", failures[index])
                    pending.future.set_exception(DecodeFailed(f"decode error: {failures[index]}"))
                else:
                    pending.future.set_result(Decoded(decoder.finish(), decoder.first_token_at))
                if pending.watch is not None:
                    pending.watch.signal.notify()  # the final snapshot, if the engine ended it
