"""Hot reload of published models and the online model shared by all consumer instances.

Every ``interval`` seconds (and on every partition assignment) an instance:

1. reads the registry's current version; if it changed, it re-seeds a new
   :class:`~state.online.OnlineSegmenter` from that model (segment ids are already
   matched to the previous model's by the offline publish, so they stay meaningful);
2. otherwise merges what it learnt since its last sync (a
   :class:`~state.online_state.Delta`) into the shared statistics in Redis
   (``<prefix>:v1:online:<version>``, JSON, optimistic ``WATCH``/``MULTI``) and loads
   the merged result, so all instances assign with the same centroids to within one
   sync interval.

What an instance learnt after its last sync is lost if it dies (its customers' state is
not: that is in the customer hashes); the next sync of the others carries on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import cast

import redis

from consumer.metrics import ConsumerMetrics
from consumer.processor import BatchProcessor
from state import keys as K
from state.errors import ConfigError
from state.model import SegmentModel
from state.online import OnlineSegmenter
from state.online_state import Delta, OnlineState, merge
from state.redis_store import StoreError
from state.registry import ModelRegistry

logger = logging.getLogger(__name__)

MAX_WATCH_RETRIES = 20


class ModelSync:
    """Registry polling and shared-state merging for one consumer instance."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        half_life_seconds: float | None,
        interval_seconds: float,
        metrics: ConsumerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.registry = ModelRegistry(client, prefix=prefix)
        self.keys = K.Keys(prefix)
        self.half_life_seconds = half_life_seconds
        self.interval_seconds = interval_seconds
        self.metrics = metrics
        self.clock = clock
        self._base: OnlineState | None = None
        self._last = -float("inf")

    def initial(self) -> BatchProcessor:
        """A processor on the registry's current model and the shared online state."""
        model = self.registry.current()
        if model is None:
            raise ConfigError(
                "no current model in the registry: run `segstream offline publish` first"
            )
        return self._reseed(model)

    def maybe_sync(self, processor: BatchProcessor, *, force: bool = False) -> BatchProcessor:
        """The processor to use from now on; syncs at most every ``interval_seconds``."""
        now = self.clock()
        if not force and now - self._last < self.interval_seconds:
            if self.metrics is not None:
                self.metrics.model_sync_age.set(now - self._last)
            return processor
        version = self.registry.current_version()
        if version is not None and version != processor.model.version:
            processor = self._reseed(self.registry.get(version))
        else:
            self._push_and_pull(processor.segmenter)
        self._last = self.clock()
        if self.metrics is not None:
            self.metrics.model_sync_age.set(0.0)
        return processor

    # -- internals ----------------------------------------------------------------------------

    def _segmenter(self, model: SegmentModel) -> OnlineSegmenter:
        return OnlineSegmenter.from_model(model, half_life_seconds=self.half_life_seconds)

    def _reseed(self, model: SegmentModel) -> BatchProcessor:
        seg = self._segmenter(model)
        self._base = seg.state()
        self._push_and_pull(seg)
        self._last = self.clock()
        logger.info("model loaded version=%s segments=%d", model.version, len(model.segments))
        return BatchProcessor(model, seg)

    def _push_and_pull(self, seg: OnlineSegmenter) -> None:
        """Merge the local delta into the shared state, then load the merged state."""
        base = self._base if self._base is not None else seg.seed_state()
        delta = seg.delta_since(base)
        key = self.keys.online_state(seg.model.version)
        try:
            merged = self._merge_in_redis(key, seg, delta)
        except redis.RedisError as exc:
            raise StoreError(f"Redis error syncing the online model: {exc}") from exc
        seg.load_state(merged)
        self._base = merged

    def _merge_in_redis(self, key: str, seg: OnlineSegmenter, delta: Delta) -> OnlineState:
        with self.client.pipeline() as pipe:
            for _ in range(MAX_WATCH_RETRIES):
                try:
                    pipe.watch(key)
                    raw = cast(bytes | None, pipe.get(key))
                    shared = OnlineState.from_dict(json.loads(raw)) if raw else seg.seed_state()
                    merged = merge(
                        shared,
                        [delta],
                        half_life=seg.half_life,
                        clock_kind=seg.clock_kind,
                    )
                    pipe.multi()
                    pipe.set(key, json.dumps(merged.to_dict(), separators=(",", ":")))
                    pipe.execute()
                    return merged
                except redis.WatchError:
                    continue
        raise StoreError(f"could not merge the online model into {key}: too much contention")
