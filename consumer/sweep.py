"""The recency sweep: customers who stop buying still move (e.g. Loyal to At-Risk).

Every ``interval`` seconds the consumer re-evaluates the customers whose time since
their last event crossed one of the ``boundaries`` (in days) since the previous sweep:
for each boundary ``W``, the customers whose last event lies in ``[prev - W, now - W)``,
read from the last-event index (``ZRANGEBYSCORE``), never by scanning keys. Only the
customers of partitions this instance owns are swept (the partition of a key is Kafka's
default murmur2 partitioning), so a sweep never races the instance's own event writes.

A re-evaluated customer gets the segment of its features at ``now`` under the current
centroids; when that differs, the segment fields are written by a small Lua script,
guarded by the stored ``decay_ts`` (a customer who bought meanwhile is left alone), with
the write version ``_v`` bumped in the same step (docs/redis-schema.md), and
a ``segment-changes`` event with reason ``sweep`` is emitted. The sweep does not learn:
the customer's point stays where its last event put it in the online model, and a
marker (``<prefix>:v1:swept``: ``<model version>|<decay_ts>|<segment id>``, written
before the segment) tells the next event of that customer which cluster holds its
point (see :func:`consumer.processor.previous_contribution`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from consumer.processor import BatchProcessor
from consumer.records import SegmentChange
from state import keys as K
from state.features import derive
from state.redis_store import StoreError
from state.store import CustomerStore

logger = logging.getLogger(__name__)

DEFAULT_BOUNDARIES_DAYS = (7.0, 30.0, 60.0, 90.0, 180.0, 365.0)
DAY = 86_400.0

# KEYS[1] customer hash; ARGV: expected decay_ts, segment_id, segment_name, model_version,
# updated_at. Writes the segment only if no event arrived since the sweep read the state,
# and bumps the write version _v like the guard script (state/guarded_write.lua): a store
# that remembers this customer's record must see that it moved (its diffs leave out
# segment fields that did not change against the remembered record).
SWEEP_WRITE = """
local cur = redis.call('HMGET', KEYS[1], 'decay_ts', 'segment_id', '_v')
if cur[1] ~= ARGV[1] then return {0, cur[2]} end
local version
if cur[3] then
  version = tonumber(cur[3]) + 1
else
  local now = redis.call('TIME')
  version = tonumber(now[1]) * 1000000 + tonumber(now[2])
end
redis.call('HSET', KEYS[1], 'segment_id', ARGV[2], 'segment_name', ARGV[3],
           'model_version', ARGV[4], 'updated_at', ARGV[5], '_v', string.format('%d', version))
return {1, cur[2]}
"""


def marker(model_version: str, decay_ts: float, segment_id: int) -> str:
    """The swept-hash value: which segment holds the point of the state with ``decay_ts``.

    >>> marker("m1", 1750000000.5, 102)
    'm1|1750000000.5|102'
    """
    return f"{model_version}|{K.number(decay_ts)}|{int(segment_id)}"


def parse_marker(value: str) -> tuple[str, str, int] | None:
    """``(model_version, decay_ts text, segment id)`` or ``None`` if malformed.

    >>> parse_marker("m1|1750000000.5|102")
    ('m1', '1750000000.5', 102)
    """
    parts = value.rsplit("|", 2)
    if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class SweepMarkers:
    """The swept hash: read for a batch's customers, cleared once they are updated."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self.client = client
        self.key = K.Keys(prefix).swept

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, str]:
        if not customer_ids:
            return {}
        try:
            values = self.client.hmget(self.key, list(customer_ids))
        except redis.RedisError as exc:
            raise StoreError(f"Redis error reading sweep markers: {exc}") from exc
        return {
            cid: (v.decode() if isinstance(v, bytes) else str(v))
            for cid, v in zip(customer_ids, values, strict=True)  # type: ignore[arg-type]
            if v is not None
        }

    def delete_many(self, customer_ids: Iterable[str]) -> None:
        ids = list(customer_ids)
        if not ids:
            return
        try:
            self.client.hdel(self.key, *ids)
        except redis.RedisError as exc:
            raise StoreError(f"Redis error clearing sweep markers: {exc}") from exc


class RecencySweep:
    """Re-evaluates customers whose recency crossed a boundary since the last sweep."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        interval_seconds: float,
        boundaries_days: Sequence[float] = DEFAULT_BOUNDARIES_DAYS,
        limit: int = 10_000,
    ) -> None:
        self.client = client
        self.keys = K.Keys(prefix)
        self.markers = SweepMarkers(client, prefix=prefix)
        self.interval_seconds = interval_seconds
        self.boundaries = tuple(sorted(boundaries_days))
        self.limit = limit
        self.last: float | None = None
        self._script = client.register_script(SWEEP_WRITE)

    def due(self, now: float) -> bool:
        return self.last is None or now - self.last >= self.interval_seconds

    def candidates(self, now: float) -> list[str]:
        """Customers whose idle time crossed a boundary in ``[last sweep, now)``."""
        since = self.last if self.last is not None else now - self.interval_seconds
        ids: dict[str, None] = {}
        for days in self.boundaries:
            lo, hi = since - days * DAY, now - days * DAY
            members = self.client.zrangebyscore(
                self.keys.last_event_index, K.number(lo), f"({K.number(hi)}", 0, self.limit
            )
            for m in members:  # type: ignore[union-attr]
                ids[m.decode() if isinstance(m, bytes) else str(m)] = None
        return list(ids)

    def run(
        self,
        processor: BatchProcessor,
        store: CustomerStore,
        *,
        owned: Callable[[str], bool],
        now: float,
    ) -> list[SegmentChange]:
        """One sweep at ``now``; returns the segment changes it wrote."""
        try:
            changes = self._run(processor, store, owned, now)
        except redis.RedisError as exc:
            raise StoreError(f"Redis error in the recency sweep: {exc}") from exc
        self.last = now
        if changes:
            logger.info("recency sweep changed=%d at=%s", len(changes), K.number(now))
        return changes

    def _run(
        self,
        processor: BatchProcessor,
        store: CustomerStore,
        owned: Callable[[str], bool],
        now: float,
    ) -> list[SegmentChange]:
        model = processor.model
        ids = [c for c in self.candidates(now) if owned(c)]
        stored = store.get_many(ids)
        rows = [
            s
            for s in stored.values()
            if s is not None
            and s.state.decay_ts is not None
            and s.model_version == model.version
            and s.segment_id is not None
        ]
        if not rows:
            return []
        hl = model.half_life_days
        seg = processor.segmenter
        points = seg.vectorize_many([derive(s.state, now, half_life_days=hl) for s in rows])
        assigned = seg.predict_points(points)
        moved = [
            (s, model.segments[int(i)])
            for s, i in zip(rows, assigned, strict=True)
            if model.segments[int(i)].id != s.segment_id
        ]
        if not moved:
            return []
        existing = self.markers.get_many([s.customer_id for s, _ in moved])
        values: dict[str, str] = {}
        for s, _new in moved:
            held = _valid_marker(existing.get(s.customer_id), model.version, s.state.decay_ts)
            values[s.customer_id] = marker(
                model.version,
                s.state.decay_ts,  # type: ignore[arg-type]
                held if held is not None else s.segment_id,  # type: ignore[arg-type]
            )
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.markers.key, mapping=values)  # marker first: always safe
        for s, new in moved:
            self._script(
                keys=[self.keys.customer(s.customer_id)],
                args=[K.number(s.state.decay_ts), new.id, new.name, model.version,  # type: ignore[arg-type]
                      K.number(now)],
                client=pipe,
            )  # fmt: skip
        replies = pipe.execute()[1:]
        changes = []
        sizes: dict[int, int] = {}
        for (s, new), (applied, _prev) in zip(moved, replies, strict=True):
            if applied != 1:
                continue
            sizes[new.id] = sizes.get(new.id, 0) + 1
            sizes[int(s.segment_id)] = sizes.get(int(s.segment_id), 0) - 1  # type: ignore[arg-type]
            changes.append(
                SegmentChange(
                    customer_id=s.customer_id,
                    previous_segment_id=s.segment_id,
                    previous_segment_name=s.segment_name,
                    segment_id=new.id,
                    segment_name=new.name,
                    model_version=model.version,
                    event_ts=now,
                    reason="sweep",
                )
            )
        _bump_sizes(self.client, self.keys, sizes)
        return changes


def _valid_marker(value: str | None, version: str, decay_ts: float | None) -> int | None:
    """The segment id a marker names, if it is for this model and this state."""
    if value is None or decay_ts is None:
        return None
    parsed = parse_marker(value)
    if parsed is None or parsed[0] != version or parsed[1] != K.number(decay_ts):
        return None
    return parsed[2]


def _bump_sizes(client: redis.Redis, keys: K.Keys, sizes: Mapping[int, int]) -> None:
    changed = {seg: d for seg, d in sizes.items() if d}
    if not changed:
        return
    pipe = client.pipeline(transaction=False)
    for seg, delta in changed.items():
        pipe.hincrby(keys.segments, K.segment_size_field(seg), delta)
    pipe.execute()


def owned_by(partitions: Mapping[str, Any]) -> Callable[[str], bool]:
    """A predicate: is this customer's key in one of the owned partitions?

    ``partitions`` maps ``"count"`` to the topic's partition count and ``"owned"`` to
    the set of owned partition numbers (Kafka's default murmur2 partitioning).
    """
    from kafka.partitioner.default import murmur2

    count, owned = int(partitions["count"]), set(partitions["owned"])

    def check(customer_id: str) -> bool:
        return ((murmur2(customer_id.encode()) & 0x7FFFFFFF) % count) in owned

    return check
