"""The customer store: what the consumer and the offline publish read and write.

:class:`CustomerStore` is the interface; :class:`InMemoryStore` implements it in plain
Python for unit tests, with exactly the rules of the Redis store
(:mod:`state.redis_store`), and both pass the same contract tests.

Exactly-once from at-least-once delivery: each customer remembers, per source partition,
the offset of the last event applied to its state, and the offline snapshot time
``as_of``. A write carrying an offset at or below the stored one, or an event time at or
before ``as_of``, is skipped. The consumer folds only events that
:meth:`StoredCustomer.accepts`, then writes each customer's final state with the
partition, offset and time of the last event it applied.

>>> store = InMemoryStore()
>>> up = CustomerUpdate(customer_id="c1", state=CustomerState(orders=1), segment_id=2,
...     segment_name="Loyal", model_version="m1", updated_at=100.0,
...     partition=0, offset=7, event_ts=100.0)
>>> [r.applied for r in store.apply_many([up, up])]
[True, False]
>>> stored = store.get("c1")
>>> stored.state.orders, stored.segment_name, stored.offsets
(1, 'Loyal', {0: 7})
>>> stored.accepts(partition=0, offset=7, event_ts=101.0)
False
>>> store.segment_sizes()
{2: 1}
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any

from state import keys as K
from state.features import STATE_FIELDS, CustomerState
from state.ids import validate_customer_id


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCustomer:
    """What the store holds for one customer."""

    customer_id: str
    state: CustomerState
    segment_id: int | None = None
    segment_name: str | None = None
    model_version: str | None = None
    updated_at: float | None = None
    as_of: float | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)

    def accepts(self, *, partition: int, offset: int, event_ts: float) -> bool:
        """True if an event is new to this state (the same rule the store's guard applies).

        >>> s = StoredCustomer(customer_id="c", state=CustomerState(), as_of=50.0, offsets={0: 9})
        >>> s.accepts(partition=0, offset=10, event_ts=60.0)
        True
        >>> s.accepts(partition=0, offset=9, event_ts=60.0), s.accepts(partition=1, offset=0, event_ts=50.0)
        (False, False)
        """
        last = self.offsets.get(partition)
        if last is not None and offset <= last:
            return False
        return self.as_of is None or event_ts > self.as_of

    @classmethod
    def from_fields(cls, customer_id: str, fields: Mapping[str, str]) -> StoredCustomer:
        """Decode a customer hash (text fields, as in Redis)."""
        seg = fields.get(K.SEGMENT_ID)
        upd = fields.get(K.UPDATED_AT)
        as_of = fields.get(K.AS_OF)
        return cls(
            customer_id=customer_id,
            state=K.decode_state(fields),
            segment_id=int(seg) if seg is not None else None,
            segment_name=fields.get(K.SEGMENT_NAME),
            model_version=fields.get(K.MODEL_VERSION),
            updated_at=float(upd) if upd is not None else None,
            as_of=float(as_of) if as_of is not None else None,
            offsets=K.decode_offsets(fields),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerUpdate:
    """The new full state and segment of a customer after the consumer applied events.

    ``partition``, ``offset`` and ``event_ts`` are those of the last event applied.
    """

    customer_id: str
    state: CustomerState
    segment_id: int
    segment_name: str
    model_version: str
    updated_at: float
    partition: int
    offset: int
    event_ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerSeed:
    """A customer's state and segment from the offline job, as of snapshot time ``as_of``."""

    customer_id: str
    state: CustomerState
    segment_id: int
    segment_name: str
    model_version: str
    updated_at: float
    as_of: float


@dataclass(frozen=True, kw_only=True)
class SeedColumns:
    """Many customers' seeds as columns: the offline publish's form of :class:`CustomerSeed`.

    ``states`` holds one list per :class:`CustomerState` attribute, one value per customer
    (``None``, or NaN in a float column, = unknown; NumPy arrays are welcome); the segment
    and the model fields are as in a seed. A store may write columns faster than rows;
    :meth:`seeds` gives the rows.

    >>> cols = SeedColumns(customer_ids=["a"], states={"orders": [2]}, segment_ids=[1],
    ...     segment_names=["Loyal"], model_version="m1", updated_at=10.0, as_of=5.0)
    >>> seed = cols.seeds()[0]
    >>> seed.customer_id, seed.state.orders, seed.state.items, seed.segment_name
    ('a', 2, 0, 'Loyal')
    """

    customer_ids: Sequence[str]
    states: Mapping[str, Sequence[Any]]  # attribute -> values; a missing one is the default
    segment_ids: Sequence[int]
    segment_names: Sequence[str]
    model_version: str
    updated_at: float
    as_of: float

    def __post_init__(self) -> None:
        n = len(self.customer_ids)
        lengths = {len(self.segment_ids), len(self.segment_names)}
        lengths |= {len(v) for v in self.states.values()}
        if lengths - {n}:
            raise ValueError(f"seed columns of unequal length: {sorted(lengths | {n})}")
        unknown = set(self.states) - set(STATE_FIELDS)
        if unknown:
            raise ValueError(f"not CustomerState attributes: {sorted(unknown)}")

    def __len__(self) -> int:
        return len(self.customer_ids)

    def seeds(self) -> list[CustomerSeed]:
        """The same seeds as rows."""
        names = list(self.states)
        rows = (
            zip(*(_python_values(a, self.states[a]) for a in names), strict=True) if names else None
        )
        out = []
        for i, cid in enumerate(self.customer_ids):
            values = next(rows) if rows is not None else ()
            out.append(
                CustomerSeed(
                    customer_id=cid,
                    state=CustomerState(**dict(zip(names, values, strict=True))),  # type: ignore[arg-type]
                    segment_id=int(self.segment_ids[i]),
                    segment_name=self.segment_names[i],
                    model_version=self.model_version,
                    updated_at=self.updated_at,
                    as_of=self.as_of,
                )
            )
        return out


def _python_values(attr: str, values: Sequence[Any]) -> list[Any]:
    """A state column as Python values (NumPy scalars would print differently), NaN -> None."""
    out = values.tolist() if hasattr(values, "tolist") else list(values)
    if attr in _FLOAT_ATTRS:
        out = [None if v is not None and v != v else v for v in out]
    return out


_FLOAT_ATTRS = frozenset(f.name for f in fields(CustomerState) if "float" in str(f.type))


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one guarded write: applied or skipped, and the segment before it."""

    customer_id: str
    applied: bool
    previous_segment_id: int | None


def size_deltas(results: Iterable[WriteResult], new_segments: Iterable[int]) -> dict[int, int]:
    """Net change of each segment's size from applied writes (for the live-size counters).

    >>> size_deltas([WriteResult("a", True, None), WriteResult("b", True, 1),
    ...              WriteResult("c", False, 1), WriteResult("d", True, 2)], [1, 2, 2, 2])
    {1: 0, 2: 1}
    """
    out: dict[int, int] = {}
    for result, new in zip(results, new_segments, strict=True):
        if not result.applied or result.previous_segment_id == new:
            continue
        if result.previous_segment_id is not None:
            out[result.previous_segment_id] = out.get(result.previous_segment_id, 0) - 1
        out[new] = out.get(new, 0) + 1
    return out


class CustomerStore(abc.ABC):
    """Per-customer state and segment, with guarded writes. One round trip per batch call."""

    shared_across_processes: bool = False
    """True when forked processes may write through copies of this store (each opens its
    own connections) and all see one state: the offline publish then uses several."""

    @abc.abstractmethod
    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredCustomer | None]:
        """Every asked customer, ``None`` for unknown ones (invalid ids raise first)."""

    @abc.abstractmethod
    def apply_many(self, updates: Sequence[CustomerUpdate]) -> list[WriteResult]:
        """Write each update unless its offset or event time is not newer (see module doc).

        Also keeps the live segment sizes (from applied writes) and the last-event index
        (from every update, see :func:`last_event_score`). Results are in input order.
        """

    @abc.abstractmethod
    def put_initial_many(self, seeds: Sequence[CustomerSeed]) -> list[WriteResult]:
        """Seed customers from the offline snapshot; idempotent on re-run.

        A seed is written unless the stored record is from a newer snapshot (``as_of``)
        or already holds an event after the seed's ``as_of`` (its ``decay_ts``).
        Offsets already recorded are kept.
        """

    def put_initial_columns(self, columns: SeedColumns) -> list[WriteResult]:
        """:meth:`put_initial_many` of ``columns.seeds()``, same rules and results; stores
        may write columns faster (the Redis store creates new customers without Lua)."""
        return self.put_initial_many(columns.seeds())

    @abc.abstractmethod
    def segment_sizes(self) -> dict[int, int]:
        """Live number of customers per segment id."""

    @abc.abstractmethod
    def idle_customers(self, before: float, *, limit: int = 1000) -> list[tuple[str, float]]:
        """Up to ``limit`` ``(customer_id, last_event_ts)`` with no event since ``before``,
        oldest first (the recency sweep)."""

    def get(self, customer_id: str) -> StoredCustomer | None:
        return self.get_many([customer_id])[customer_id]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (nothing to do by default)."""

    def __enter__(self) -> CustomerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the guard, in Python (the Lua scripts of state.redis_store are its twin) -----------------


def update_fields(update: CustomerUpdate | CustomerSeed) -> tuple[dict[str, str], list[str]]:
    """Hash fields to set and fields to delete for an update (state + segment)."""
    fields = K.encode_state(update.state)
    absent = [f for f in K.STATE_FIELDS if f not in fields]
    fields[K.SEGMENT_ID] = str(int(update.segment_id))
    fields[K.SEGMENT_NAME] = update.segment_name
    fields[K.MODEL_VERSION] = update.model_version
    fields[K.UPDATED_AT] = K.number(update.updated_at)
    return fields, absent


def seed_fields(seed: CustomerSeed) -> tuple[dict[str, str], list[str]]:
    """Hash fields to set and to delete for an offline seed: an update's, plus ``_as_of``."""
    fields, absent = update_fields(seed)
    fields[K.AS_OF] = K.number(seed.as_of)
    return fields, absent


def last_event_score(update: CustomerUpdate) -> float:
    """Score of a customer in the last-event index: its latest event time known to the write.

    Indexed for every delivered update, applied or not (idempotent: the index only moves up).
    """
    decay = update.state.decay_ts
    return update.event_ts if decay is None else max(update.event_ts, decay)


def _bump_version(fields: dict[str, str]) -> None:
    """Every applied write moves ``_v`` up by one. Redis starts a new hash at its clock in µs
    (a deleted hash must not repeat versions); here no hash is ever deleted, so at 1, which
    keeps two in-memory stores fed the same writes equal."""
    fields[K.VERSION] = str(int(fields.get(K.VERSION, "0")) + 1)


def _opt_int(text: str | None) -> int | None:
    return int(text) if text is not None else None


class InMemoryStore(CustomerStore):
    """A dict of customer hashes with the Redis store's exact rules (unit tests only)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.sizes: dict[int, int] = {}
        self.last_event: dict[str, float] = {}

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredCustomer | None]:
        ids = [validate_customer_id(c) for c in customer_ids]
        out: dict[str, StoredCustomer | None] = {}
        for cid in ids:
            h = self.hashes.get(cid)
            out[cid] = StoredCustomer.from_fields(cid, h) if h else None
        return out

    def raw_fields(self, customer_id: str) -> dict[str, str]:
        """Every field of a customer's hash, as Redis would hold it."""
        return dict(self.hashes.get(validate_customer_id(customer_id), {}))

    def apply_many(self, updates: Sequence[CustomerUpdate]) -> list[WriteResult]:
        for u in updates:
            validate_customer_id(u.customer_id)
        results = []
        for u in updates:
            h = self.hashes.setdefault(u.customer_id, {})
            pfield = K.partition_field(u.partition)
            prev = _opt_int(h.get(K.SEGMENT_ID))
            last = h.get(pfield)
            as_of = h.get(K.AS_OF)
            self._index(u.customer_id, last_event_score(u))
            if (last is not None and int(last) >= u.offset) or (
                as_of is not None and u.event_ts <= float(as_of)
            ):
                results.append(WriteResult(u.customer_id, False, prev))
                continue
            fields, absent = update_fields(u)
            for name in absent:
                h.pop(name, None)
            h[pfield] = str(int(u.offset))
            h.update(fields)
            _bump_version(h)
            results.append(WriteResult(u.customer_id, True, prev))
        self._add_sizes(size_deltas(results, (u.segment_id for u in updates)))
        return results

    def put_initial_many(self, seeds: Sequence[CustomerSeed]) -> list[WriteResult]:
        for s in seeds:
            validate_customer_id(s.customer_id)
        results = []
        for s in seeds:
            h = self.hashes.setdefault(s.customer_id, {})
            prev = _opt_int(h.get(K.SEGMENT_ID))
            if s.state.decay_ts is not None:  # indexed whether applied or not, like Redis
                self._index(s.customer_id, s.state.decay_ts)
            as_of = h.get(K.AS_OF)
            decay = h.get("decay_ts")
            if (as_of is not None and float(as_of) > s.as_of) or (
                decay is not None and float(decay) > s.as_of
            ):
                results.append(WriteResult(s.customer_id, False, prev))
                continue
            fields, absent = seed_fields(s)
            before = dict(h)
            for name in absent:
                h.pop(name, None)
            h.update(fields)
            if h != before:  # a re-run of the same publish changes nothing, not even _v
                _bump_version(h)
            results.append(WriteResult(s.customer_id, True, prev))
        self._add_sizes(size_deltas(results, (s.segment_id for s in seeds)))
        return results

    def _index(self, customer_id: str, ts: float) -> None:
        self.last_event[customer_id] = max(ts, self.last_event.get(customer_id, ts))

    def _add_sizes(self, deltas: Mapping[int, int]) -> None:
        for seg, delta in deltas.items():
            self.sizes[seg] = self.sizes.get(seg, 0) + delta

    def segment_sizes(self) -> dict[int, int]:
        return dict(self.sizes)

    def idle_customers(self, before: float, *, limit: int = 1000) -> list[tuple[str, float]]:
        ordered = sorted((ts, cid) for cid, ts in self.last_event.items())
        cut = bisect.bisect_left(ordered, (before, ""))
        return [(cid, ts) for ts, cid in ordered[:cut][:limit]]
