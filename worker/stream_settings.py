"""How a worker's streams flush: each stream's settings, and the load all of them share."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.stream_store import SubscriberWatch


@dataclass
class StreamLoad:
    """How many followers this worker's streams have, shared by its publishers.

    Every flush of a followed stream is a signed post per follower (its DynamoDB write goes
    out with the other streams' in one transaction); at one per token they cost the decoder
    its CPU. Flushes are spread so that all followers together are posted to at most
    `posts_per_second`. Every followed stream flushes on the same interval, so each reader
    sees text as often as any other, whether its stream has one follower or many."""

    posts_per_second: float = 100.0
    followers: int = 0

    def interval(self, minimum: float) -> float:
        return max(minimum, self.followers / self.posts_per_second)


@dataclass
class StreamSettings:
    table: str
    flush_interval: float = 0.05  # while a connection follows the job
    # While nobody follows, events are still stored (for a later subscribe) but coarser:
    # every store is a DynamoDB write competing with decoding for the machine. These flushes
    # fall on a clock shared by all of a worker's streams, so the ChunkWriter batches them.
    unfollowed_flush_interval: float = 0.5
    # While followed, an event carries at least this many new tokens (SGLang's and vLLM's
    # `stream_interval`): every flush is a post per follower and a stored chunk, which on a
    # CPU cost the decoder a token's time or more. The first and the last event go at once,
    # and a stream waits at most a second for its tokens (worker/publisher.py).
    interval_tokens: int = 1
    expires_at: int = 0
    load: StreamLoad = field(default_factory=StreamLoad)
    # The worker's check for new subscribers; a stream is in it while its job decodes.
    subscribers: SubscriberWatch | None = None
