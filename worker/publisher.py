"""A job's stream: decoder progress -> numbered events -> DynamoDB chunks -> WebSocket posts.

Tokens are coalesced (by time and size) into events with increasing `seq`. Every event is
committed under the job's lease, then stored, before it is posted (the last flush is stored
with the job's result, in one transaction), so a client that reconnects
can `subscribe` from any seq and replay what it missed, and a worker whose job was taken over
posts nothing it could not commit (it stops with LeaseLost). A connection that answers 410
Gone is dropped; decoding goes on.
Chunks go through the worker's shared `ChunkWriter`, and new subscribers are found through its
`SubscriberWatch` (worker/stream_store.py), not by each job on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from headrace.core.aws_calls import AwsCall
from headrace.core.contracts import StreamEvent
from headrace.core.errors import ConditionFailed, HeadraceError
from headrace.core.tables import connections as connection_table
from headrace.core.tables import streams as stream_table
from headrace.core.tables.jobs import Item
from worker.lifecycle import StreamTail
from worker.progress import Progress, Watch
from worker.stream_events import NewEvents, coalesced_events, events_per_token
from worker.stream_settings import StreamSettings
from worker.stream_store import ChunkWriter, StreamFence

logger = logging.getLogger("headrace.stream")

# How much a follower may be sent again after a worker loss: a note per follower this often,
# written with the stream's next flush.
_RECORD_DELIVERED_SECONDS = 2.0
# A followed stream waiting for `StreamSettings.interval_tokens` shows what it has after this.
_LONGEST_HOLD_SECONDS = 1.0

Post = Callable[[str, str, bytes], Awaitable[bool]]  # (endpoint, connection, data) -> alive?


@dataclass
class _Follower:
    subscription: stream_table.Subscription
    next_index: int  # index into events of the next event to send
    # When its delivered seq was last written (or it was attached): a worker taking over
    # resends at most what was posted since, and clients drop the seqs they have seen.
    recorded_at: float


@dataclass
class StreamPublisher:
    request_id: str
    attacher: str  # who delivers: this worker and attempt
    settings: StreamSettings
    aws: AwsCall  # worker's retrying AWS call wrapper: aws(operation, **kwargs)
    dynamodb: Any
    post: Post
    writer: ChunkWriter
    fence: StreamFence  # every flush is committed there first
    # One event per token, each with its log prob (LLM Engine's stream shape when the request
    # asks for log probs); otherwise events coalesce tokens.
    event_per_token: bool = False
    events: list[StreamEvent] = field(default_factory=list)
    # From a resumed attempt: what earlier events already showed.
    text_sent: int = 0
    tokens_sent: int = 0
    _followers: dict[str, _Follower] = field(default_factory=dict)
    # The job record's count of subscriptions: the highest seen, and the one last attached.
    _subscriptions_seen: int = 0
    _subscriptions_attached: int = 0
    _attention: asyncio.Event = field(default_factory=asyncio.Event)
    _finished: bool = False
    # events[i] as posted, serialized once for all of its followers
    _encoded: list[bytes] = field(default_factory=list)
    # The job's last flush, numbered but not committed: stored with its result (`last_flush`).
    _held_last: list[Item] | None = None
    # Per follower, the last seq posted to it that is due to be noted (`_record_delivered`).
    _notes: dict[str, int] = field(default_factory=dict)
    _published_at: float = 0.0  # monotonic time of the last flush
    # The connection that submitted the job, as its record names it (`expect_first_follower`).
    _first_follower: stream_table.Subscription | None = None

    @property
    def next_seq(self) -> int:
        return len(self.events)

    @classmethod
    def resumed(cls, chunks: list[stream_table.StoredChunk], **kwargs: Any) -> StreamPublisher:
        publisher = cls(**kwargs)
        publisher.events = [c.event for c in chunks]
        for chunk in chunks:
            if chunk.event.output is not None:
                publisher.text_sent += len(chunk.event.output.text)
        publisher.tokens_sent = sum(len(c.token_ids) for c in chunks)
        return publisher

    def subscriptions_seen(self, count: int) -> None:
        """The job record counts `count` subscriptions; new ones are attached at the next flush,
        which comes at once."""
        if count > self._subscriptions_seen:
            self._subscriptions_seen = count
            self._attention.set()

    def expect_first_follower(self, connection_id: str, endpoint: str) -> None:
        """The job's record names the connection that submitted it: while the record counts
        no other subscription, attaching it needs no query of the job's subscriptions."""
        self._first_follower = stream_table.Subscription(
            self.request_id, connection_id, endpoint, from_seq=0, attached_by=None
        )

    @property
    def _new_subscriptions(self) -> bool:
        return self._subscriptions_seen > self._subscriptions_attached

    # ---- following the decoder --------------------------------------------------------------

    async def follow(self, watch: Watch) -> None:
        """Publish the job's progress until it finishes (run as a task; cancel to stop)."""
        await watch.started.wait()
        counted = 0  # followers counted in the worker's load
        if self.settings.subscribers is not None:
            self.settings.subscribers.add(self)
        try:
            if self._new_subscriptions:
                # Who followed the job before it started (the connection that submitted it) is
                # attached while the batch's prefill runs: off the first token's way out.
                await self._deliver(refresh=True)
            while not self._finished:
                await watch.signal.wait()
                if len(self._followers) != counted:
                    self.settings.load.followers += len(self._followers) - counted
                    counted = len(self._followers)
                # A follower's first event goes out at once (time to first token); later ones
                # coalesce, and so does every event while nobody follows: a job that ends
                # unfollowed within one flush interval stores its stream in one write, not two.
                progress = watch.progress(since=self.tokens_sent)
                if (self.events or not self._followers) and not progress.finished:
                    await self._pause(watch)
                    progress = watch.progress(since=self.tokens_sent)
                    while self._holds(progress, watch):
                        await self._pause(watch)
                        progress = watch.progress(since=self.tokens_sent)
                await self.publish(progress)
        finally:
            self.settings.load.followers -= counted
            if self.settings.subscribers is not None:
                self.settings.subscribers.remove(self)

    def _holds(self, progress: Progress, watch: Watch) -> bool:
        """Whether a followed stream's next event waits for more tokens."""
        if not self._followers or progress.finished or watch.ended.is_set():
            return False
        if self._new_subscriptions:
            return False
        unsent = progress.num_tokens - self.tokens_sent
        held = time.monotonic() - self._published_at
        return unsent < self.settings.interval_tokens and held < _LONGEST_HOLD_SECONDS

    async def _pause(self, watch: Watch) -> None:
        """Until the next flush is due, a new subscriber waits, or the job ends (its last event
        must not wait for the next flush: the job is final only once it is stored)."""
        if self._new_subscriptions or watch.ended.is_set():
            return
        interval = (
            self.settings.load.interval(self.settings.flush_interval)
            if self._followers
            else self.settings.unfollowed_flush_interval
        )
        # On a clock all of the worker's streams share: their flushes fall together, and go
        # out together (one transaction, one chunk write; worker/stream_store.py).
        delay = interval - time.monotonic() % interval
        self._attention.clear()
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._attention, watch.ended)]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def publish(self, progress: Progress) -> None:
        if self._finished:
            return
        cut = events_per_token if self.event_per_token else coalesced_events
        new, self.text_sent, self.tokens_sent = cut(
            self.request_id, progress, self.text_sent, self.tokens_sent
        )
        if new and progress.finished and not self._new_subscriptions:
            # The last flush waits to be stored with the job's final state, then is posted.
            self._held_last = self._numbered(new)
            self._finished = True
            return
        if new:
            self._published_at = time.monotonic()
            await self._store(new)
        # Subscribers that arrive from here until the job is final are found by `sweep`.
        await self._deliver(refresh=self._new_subscriptions)
        self._finished = progress.finished

    async def catch_up(self) -> None:
        """Deliver every stored event to every subscriber (a job ended by an earlier attempt's
        stream: that attempt's worker may not have posted its last events)."""
        await self._deliver(refresh=True)

    async def fail(self, message: str, status_code: int = 500) -> None:
        """End the stream with one error event (a failure after streaming began)."""
        await self.end_with(StreamEvent.failure(self.request_id, status_code, message))

    async def end_with(self, event: StreamEvent) -> None:
        """End the stream with this last event (a failure, a halt before decoding)."""
        if self._finished:
            return
        await self._store([(event, [])])
        await self._deliver(refresh=True)
        self._finished = True

    # ---- storing ----------------------------------------------------------------------------

    def last_flush(self) -> StreamTail | None:
        """The held last flush, for the transaction that stores the job's final state (then
        `last_flush_stored`); None if none is held or it is too big for one transaction."""
        if self._held_last is None:
            return None
        actions = self.fence.last_flush(self._held_last)
        if actions is None:
            return None
        return StreamTail(actions, subscriptions=self._subscriptions_seen)

    async def last_flush_stored(self) -> None:
        """The held last flush was stored (with the job's final state): post it."""
        if self._held_last is None:
            return
        self.fence.advance(len(self._held_last))
        self._held_last = None
        await self._deliver(refresh=False)

    async def store_last_flush(self) -> None:
        """Commit, store and deliver the held last flush on its own, before the final state is
        written alone (the transaction did not go through, or was not possible)."""
        if self._held_last is None:
            return
        items, self._held_last = self._held_last, None
        await self.fence.commit(items)
        await self.writer.put(items)
        await self._deliver(refresh=self._new_subscriptions)

    async def _store(self, new: NewEvents) -> None:
        notes, self._notes = self._notes, {}
        updates = [
            stream_table.record_delivered(
                self.settings.table, request_id=self.request_id, connection_id=c, seq=seq
            )
            for c, seq in notes.items()
        ]
        if not await self.fence.store(self._numbered(new), self.writer, updates):
            for update in updates:  # the flush went the ordinary way: so do they
                # ConditionFailed: the subscription went away with its connection.
                with contextlib.suppress(ConditionFailed):
                    await self.aws(self.dynamodb.update_item, **update)

    def _numbered(self, new: NewEvents) -> list[Item]:
        """The new events numbered, appended to the stream, as chunk items."""
        items = []
        for event, token_ids in new:
            event.seq = self.next_seq
            self.events.append(event)
            item = stream_table.put_chunk(
                self.settings.table,
                request_id=self.request_id,
                event=event,
                token_ids=token_ids,
                expires_at=self.settings.expires_at,
                epoch=self.fence.epoch,
            )["Item"]
            items.append(item)
        return items

    # ---- delivering -------------------------------------------------------------------------

    async def sweep(self, subscriptions: int | None) -> None:
        """After the job is final: deliver to anyone who subscribed in the last moment.

        `subscriptions` is the job record's count as the final write left it (None: unknown,
        so look). Who subscribes after that write sees the job final, and its handler replays.
        """
        if subscriptions is None:
            await self._deliver(refresh=True)
            return
        self.subscriptions_seen(subscriptions)
        await self._deliver(refresh=self._new_subscriptions)

    async def _deliver(self, *, refresh: bool) -> None:
        if refresh:
            # Taken before the query: a count seen while it runs triggers another look.
            self._subscriptions_attached = self._subscriptions_seen
            await self._attach_new()
        for connection_id, follower in list(self._followers.items()):
            await self._send(connection_id, follower)

    async def _attach_new(self) -> None:
        first, self._first_follower = self._first_follower, None
        only_first = self._subscriptions_attached == 1  # the record counted no other
        if first is not None and only_first and await self._attach(first.connection_id):
            self._follow(first)
            return
        # Otherwise (more subscriptions, or the first not ours to take) what they all say:
        answer = await self.aws(
            self.dynamodb.query,
            **stream_table.query_subscriptions(self.settings.table, self.request_id),
        )
        subscriptions = [stream_table.Subscription.from_item(i) for i in answer.get("Items", [])]
        new = [s for s in subscriptions if s.connection_id not in self._followers]
        attached = await asyncio.gather(*(self._attach(s.connection_id) for s in new))
        for subscription, ours in zip(new, attached, strict=True):
            if ours:  # else a handler is replaying to it, or it just went away
                self._follow(subscription)

    def _follow(self, subscription: stream_table.Subscription) -> None:
        self._followers[subscription.connection_id] = _Follower(
            subscription,
            next_index=min(subscription.resume_seq, len(self.events)),
            recorded_at=time.monotonic(),
        )

    async def _attach(self, connection_id: str) -> bool:
        """Become the one who delivers to the subscription; False if it is not ours to take.

        With the worker's other writes of the moment, in one transaction (the jobs of a batch
        attach their followers together, as its prefill starts); alone if that did not go
        through (attaching again is harmless: the condition lets this attempt through)."""
        update = stream_table.attach_subscription(
            self.settings.table,
            request_id=self.request_id,
            connection_id=connection_id,
            attacher=self.attacher,
        )
        if self.fence.flushes is not None and await self.fence.flushes.write([{"Update": update}]):
            return True
        try:
            await self.aws(self.dynamodb.update_item, **update)
        except ConditionFailed:
            return False
        return True

    async def _send(self, connection_id: str, follower: _Follower) -> None:
        endpoint = follower.subscription.endpoint
        sent = False
        while follower.next_index < len(self.events):
            if not await self.post(endpoint, connection_id, self._data(follower.next_index)):
                await self._drop(connection_id)
                return
            follower.next_index += 1
            sent = True
        if sent:
            self._record_delivered(connection_id, follower)

    def _data(self, index: int) -> bytes:
        while len(self._encoded) <= index:
            self._encoded.append(self.events[len(self._encoded)].model_dump_json().encode())
        return self._encoded[index]

    def _record_delivered(self, connection_id: str, follower: _Follower) -> None:
        """Noted every few seconds at most, with the stream's next flush (no call of its own):
        after a loss, a worker taking over posts again only what was posted since. A note per
        post would cost more than the post, and one for the last event would only spare a
        resend in the moment between that post and the final write (a job that is final is
        not taken over)."""
        now = time.monotonic()
        if now - follower.recorded_at < _RECORD_DELIVERED_SECONDS:
            return
        follower.recorded_at = now
        self._notes[connection_id] = follower.next_index - 1

    async def _drop(self, connection_id: str) -> None:
        self._followers.pop(connection_id, None)
        self._notes.pop(connection_id, None)
        logger.info(
            "connection gone; no longer streaming to it", extra={"connection": connection_id}
        )
        try:
            await self.aws(
                self.dynamodb.transact_write_items,
                **connection_table.delete_subscription(
                    self.settings.table, request_id=self.request_id, connection_id=connection_id
                ),
            )
        except HeadraceError as e:
            logger.warning("could not delete the subscription: %s", e.detail)
