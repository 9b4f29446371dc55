"""States of the customers this instance writes, kept after each write (saves a read).

The consumer owns its partitions: between a rebalance and the next, it is the only
writer of their customers, so what it wrote is what the store holds. After a guarded
write, an applied update replaces the cached record; a refused one (someone else
wrote, or a replay) drops it. The service clears the whole cache when partitions are
revoked, when the model changes, and after any store error (Redis may have restarted
without its data). Bounded: the least recently used customers are evicted.

>>> from state.features import CustomerState
>>> from state.store import CustomerUpdate, StoredCustomer, WriteResult
>>> cache = StateCache(capacity=2)
>>> u = CustomerUpdate(customer_id="c1", state=CustomerState(orders=1), segment_id=2,
...     segment_name="Loyal", model_version="m1", updated_at=5.0, partition=0, offset=7,
...     event_ts=5.0)
>>> cache.record([u], [WriteResult("c1", True, None)], {"c1": None})
>>> cache.get_many(["c1", "c2"])["c1"].offsets
{0: 7}
>>> cache.record([u], [WriteResult("c1", False, 2)], {})
>>> cache.get_many(["c1"])
{}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from state.store import CustomerUpdate, StoredCustomer, WriteResult


class StateCache:
    """``customer_id -> StoredCustomer`` as last written by this instance (LRU-bounded)."""

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self._items: dict[str, StoredCustomer] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredCustomer]:
        """The cached ones among ``customer_ids`` (the rest must be read from the store)."""
        out = {}
        items = self._items
        for cid in customer_ids:
            hit = items.pop(cid, None)
            if hit is not None:
                items[cid] = hit  # most recently used goes last
                out[cid] = hit
        self.hits += len(out)
        self.misses += len(customer_ids) - len(out)
        return out

    def record(
        self,
        updates: Sequence[CustomerUpdate],
        results: Sequence[WriteResult],
        before: Mapping[str, StoredCustomer | None],
    ) -> None:
        """Remember applied writes (their records as now stored); forget refused ones."""
        items = self._items
        for u, r in zip(updates, results, strict=True):
            if not r.applied:
                items.pop(u.customer_id, None)
                continue
            prev = items.pop(u.customer_id, None) or before.get(u.customer_id)
            offsets = dict(prev.offsets) if prev is not None else {}
            offsets[u.partition] = u.offset
            items[u.customer_id] = StoredCustomer(
                customer_id=u.customer_id,
                state=u.state,
                segment_id=u.segment_id,
                segment_name=u.segment_name,
                model_version=u.model_version,
                updated_at=u.updated_at,
                as_of=prev.as_of if prev is not None else None,
                offsets=offsets,
            )
        while len(items) > self.capacity:
            del items[next(iter(items))]

    def drop(self, customer_ids: Iterable[str]) -> None:
        """Forget these customers (written by someone else, e.g. the recency sweep)."""
        for cid in customer_ids:
            self._items.pop(cid, None)

    def clear(self) -> None:
        self._items.clear()
