"""Dynamic batching: held jobs are grouped into engine batches, one per free replica.

CTranslate2 cannot add a request to a running batch, so the scheduler waits for a free replica
first and only then forms a batch (worker/batching.py) from everything that arrived meanwhile.
How long a free replica waits for company:

- a lone job on an idle worker (nothing running, nothing else arriving) waits
  `max_batch_wait`, a moment, and starts: the first token comes about a prefill later;
- otherwise it waits while jobs are on their way (received, not yet claimed) or keep coming
  (one came within QUIET_S), for at most `max_batch_hold`: a batch runs for seconds and nothing
  can join it later, so during a burst it pays to plan with the whole burst in view. Once the
  worker holds all it may (its prefetch is full) and nothing is on its way, it starts at once.

A lone job started that way may turn out to be the first of a burst. Then its batch gives way
(stops after its current token) while it is young, and the job goes back to the others with
what it generated, which the next batch takes as part of its prompt.

Items that finish early stop in the callback, so a short job never decodes past its own end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from headrace.core.contracts import CompletionRequest, TokenOutput
from headrace.core.logs import request_context
from worker.batching import plan_width, select_batch_in_lanes
from worker.decoding import ItemDecoder, TextCodec, sampling_params
from worker.engine import Engine, Step
from worker.failures import DecodeFailed as DecodeFailed
from worker.failures import RequestRefused as RequestRefused
from worker.guided import Guides
from worker.guided_jobs import alone_if_guided, decode_guided, is_guided
from worker.halts import Halt
from worker.held_jobs import BatchRun, HeldJob
from worker.held_jobs import Decoded as Decoded
from worker.progress import Watch

logger = logging.getLogger("headrace.scheduler")


# A busy worker stops waiting for company once no job has come for this long (a burst reaches
# the worker in clumps a receive apart: 0.1-0.3 s locally).
QUIET_S = 0.25
# A lone job's batch gives way once this many more jobs wait to be batched.
BURST = 3


class Arrival:
    """A received job on its way to `complete` (being claimed): while any is, a busy worker's
    free replica waits for it (within `max_batch_hold`). Counted from the moment it is
    received, so no job is ever both out of sight and about to come; ends at `done` or at
    the end of a `with` block."""

    def __init__(self, runner: ModelRunner) -> None:
        self._runner: ModelRunner | None = runner
        runner._arriving += 1
        runner._give_way_to_burst()

    def done(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner._arriving -= 1
            runner._arrived.set()

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


@dataclass(frozen=True)
class Resume:
    """What an earlier attempt generated and streamed: decoding continues after it."""

    token_ids: list[int]
    tokens: list[TokenOutput]


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
        max_batch_hold: float,
        prefetch_per_replica: int,
        step_seconds: Mapping[int, float] | None = None,
    ) -> None:
        self.name = name
        self.engine = engine
        self.codec = codec
        self.guides = Guides(codec)  # guided jobs run alone, stepped (worker/guided.py)
        self.max_batch_size = max_batch_size
        # The widths timed at warm-up up to max_batch_size, and one replica's step at each:
        # each batch's width is chosen among them for what is held (worker/batching.py).
        self.step_seconds = dict(step_seconds or {max_batch_size: 1.0})
        self.max_batch_wait = max_batch_wait
        self.max_batch_hold = max_batch_hold
        self.replicas = engine.inter_threads
        # Jobs the worker may hold for this model: its share of the worker's prefetch.
        self.prefetch = self.replicas * max(prefetch_per_replica, max_batch_size)
        self._pending: collections.deque[HeldJob] = collections.deque()
        self._arrived = asyncio.Event()
        self._free_replicas = asyncio.Semaphore(self.replicas)
        self._executor = ThreadPoolExecutor(self.replicas, thread_name_prefix=f"decode-{name}")
        self._runs: dict[asyncio.Task[None], BatchRun] = {}
        self._last_arrival = 0.0
        self._arriving = 0  # jobs received for this model but not yet handed to `complete`
        self._intake_full = False  # the worker may receive no more jobs for now

    async def complete(
        self,
        request_id: str,
        request: CompletionRequest,
        *,
        watch: Watch | None = None,
        resume: Resume | None = None,
        halt: Halt | None = None,
    ) -> Decoded:
        future: asyncio.Future[Decoded] = asyncio.get_running_loop().create_future()
        prompt = self.codec.prompt_tokens(request.prompt)
        # Only here are the prompt's tokens known; the API bounds its bytes alone.
        needed = len(prompt) + request.max_new_tokens
        if needed > self.engine.max_context_tokens:
            raise RequestRefused(
                f"prompt: {len(prompt)} tokens and max_new_tokens {request.max_new_tokens}"
                f" make {needed}, over the model's context of"
                f" {self.engine.max_context_tokens} tokens"
            )
        decoder = ItemDecoder(self.codec, request, len(prompt), stopper=halt)
        if resume is not None:
            decoder.resume(resume.token_ids, resume.tokens)
            prompt += [self.codec.token(i) for i in resume.token_ids]
        if watch is not None:
            watch.source = decoder
        if decoder.finished:  # resumed with all its tokens: there is nothing left to decode
            if watch is not None:
                watch.started.set()
                watch.signal.notify()
                watch.ended.set()
            return Decoded(decoder.finish(), decoder.first_token_at)
        self._last_arrival = asyncio.get_running_loop().time()
        self._pending.append(
            HeldJob(request_id, request, future, prompt, decoder, self._last_arrival, watch)
        )
        self._arrived.set()
        self._give_way_to_burst()
        return await future

    def halt_waiting(self) -> None:
        """End now each job whose halt is due while it waits for a batch (worker/halts.py):
        one in a batch stops at its next token, in the engine's callback."""
        for pending in self._live_pending():
            if pending.decoder.halt_if_due():
                if pending.watch is not None:
                    pending.watch.started.set()
                self._resolve(pending)

    def arrival(self) -> Arrival:
        """Call when a job for this model is received; end it once the job is handed to
        `complete` or dropped."""
        return Arrival(self)

    def set_intake_full(self, full: bool) -> None:
        """The worker's prefetch is full (True) or has room again: while it is full and no job
        is on its way, nothing more can come, so a free replica need not wait for company."""
        if full != self._intake_full:
            self._intake_full = full
            self._arrived.set()

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
                    run = await self._next_run()
                except BaseException:
                    self._free_replicas.release()
                    raise
                task = asyncio.create_task(self._run_batch(run))
                self._runs[task] = run
                task.add_done_callback(self._runs.pop)
        finally:
            for pending in self._pending:
                pending.future.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _next_run(self) -> BatchRun:
        while not self._live_pending():
            self._arrived.clear()
            await self._arrived.wait()
        if self._lone_on_idle() and self.max_batch_wait > 0:
            await asyncio.sleep(self.max_batch_wait)
        lone = self._lone_on_idle()
        if not lone:
            await self._hold_for_company()
        batch = self._select()
        chosen = {id(p) for p in batch}
        self._pending = collections.deque(p for p in self._live_pending() if id(p) not in chosen)
        if self._pending:
            self._arrived.set()
        gives_way = lone and not any(is_guided(p.request) for p in batch)
        return BatchRun(batch, asyncio.get_running_loop().time(), gives_way=gives_way)

    def _lone_on_idle(self) -> bool:
        running = any(not task.done() for task in self._runs)
        return not running and not self._arriving and len(self._live_pending()) == 1

    def _give_way_to_burst(self) -> None:
        waiting = len(self._live_pending()) + self._arriving
        if waiting < BURST:
            return
        now = asyncio.get_running_loop().time()
        for run in self._runs.values():
            if run.gives_way and not run.stopping and now - run.started_at < self.max_batch_hold:
                run.stopping = True
                logger.info(
                    "batch gives way to a burst",
                    extra={"model": self.name, "requests": [p.request_id for p in run.batch]},
                )

    async def _hold_for_company(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_batch_hold
        quiet = min(QUIET_S, self.max_batch_hold / 8)
        while True:
            if not self._arriving and self._intake_full:
                return  # nothing on its way, and nothing more can be received
            # Jobs on their way may make a tighter batch than a full one of what is here.
            wake = deadline if self._arriving else min(deadline, self._last_arrival + quiet)
            if loop.time() >= wake:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wake - loop.time())

    def _select(self) -> list[HeldJob]:
        now = asyncio.get_running_loop().time()
        live = self._live_pending()
        interactive = [p for p in live if p.request.priority == "interactive"]
        batch_lane = [p for p in live if p.request.priority != "interactive"]
        # A replica still decoding is busy for a while: a plan counting it free from now
        # would cut the rest of a burst as if all the replicas were about to share it.
        busy = [run.seconds_left(self.step_seconds) for run in self._runs.values()]
        width = plan_width(live, self.step_seconds, self.replicas, busy)
        return alone_if_guided(select_batch_in_lanes(interactive, batch_lane, width, now))

    def _live_pending(self) -> list[HeldJob]:
        return [p for p in self._pending if not p.future.done()]

    async def _run_batch(self, run: BatchRun) -> None:
        try:
            if run.batch:
                await self._decode(run)
        finally:
            self._free_replicas.release()

    async def _decode(self, run: BatchRun) -> None:
        loop = asyncio.get_running_loop()
        batch = run.batch
        for pending in batch:
            if pending.watch is not None:
                pending.watch.started.set()
        if is_guided(batch[0].request):
            job, engine = batch[0], self.engine
            return await decode_guided(engine, self.guides, self._executor, job, self._resolve)
        failures: dict[int, Exception] = {}

        def on_step(step: Step) -> bool:
            # Runs on a CTranslate2 thread. An exception here would abort the whole batch,
            # so a failing item is stopped and failed alone.
            pending = batch[step.index]
            if pending.future.cancelled():  # its caller let go of it (e.g. lost the lease)
                return True
            try:
                stop = pending.decoder.on_step(step)
                if pending.watch is not None:
                    pending.watch.signal.notify()
                if stop and pending.decoder.finished:
                    # Its result is ready now: the job need not wait for the rest of the batch.
                    loop.call_soon_threadsafe(self._resolve, pending)
                return stop or run.stopping
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
            elif run.stopping and not pending.decoder.finished and not pending.future.done():
                self._requeue(pending, since=run.tokens_at_start[index])
            else:
                self._resolve(pending)

    def _requeue(self, pending: HeldJob, *, since: int) -> None:
        """Back among the waiting jobs; what it generated becomes part of its prompt."""
        pending.prompt += [self.codec.token(i) for i in pending.decoder.token_ids[since:]]
        self._pending.appendleft(pending)
        self._arrived.set()

    def _resolve(self, pending: HeldJob) -> None:
        if pending.future.done():
            return
        decoder = pending.decoder
        pending.future.set_result(Decoded(decoder.finish(), decoder.first_token_at))
        if pending.watch is not None:
            pending.watch.signal.notify()  # the final snapshot, if the engine ended the item
            pending.watch.ended.set()
