"""One batch of the consumer, as pure steps over plain lists (no Kafka, Redis or metrics).

The service runs, per poll::

    decoded, dead = decode_records(records, now=..., currency=...)
    stored = store.get_many(customer_ids(decoded))        # one round trip
    plan = processor.plan(decoded, stored, now=...)       # fold, assign, learn
    results = store.apply_many(plan.updates)              # one guarded round trip
    changes = plan.changes(results)                       # only real, applied changes

**Exactly-once state.** For each customer only events the stored record
:meth:`~state.store.StoredCustomer.accepts` are folded (offset newer than the last one
applied from that partition, event time after the offline ``as_of``), in arrival order,
with :func:`state.features.apply_event`; the store's guard refuses the write of an
update that is not newer, so a redelivered batch changes nothing.

**Segments.** Each changed customer is evaluated at its latest event time
(``max(decay_ts, as_of)``), vectorised through the model's schema guard, assigned and
learnt by the online model in one :meth:`~state.online.OnlineSegmenter.move_many`. The
customer's previous contribution is rebuilt from its stored record (same state, same
evaluation time, stored segment), so no extra field is needed in Redis.

**Poison.** A customer whose processing raises (a bug, not bad input: bad input is
rejected by the decoder) is retried a bounded number of times, then all of its events
in the batch go to the dead-letter topic with ``processing_error:<ExceptionClass>``;
the rest of the batch proceeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

import numpy as np

from consumer.cache import StateCache
from consumer.records import (
    DeadLetter,
    Decoded,
    SegmentChange,
    SourceRecord,
    customer_ids,
    decode_records,
)
from state import keys as K
from state.features import CustomerState, derive, fold_events
from state.model import SegmentModel
from state.online import OnlineSegmenter, Previous
from state.online_state import Contribution
from state.store import CustomerStore, CustomerUpdate, StoredCustomer, WriteResult

logger = logging.getLogger(__name__)

#: Attempts at processing one customer before its events are dead-lettered.
POISON_ATTEMPTS = 3
#: Customers whose last point the processor remembers (cleared as a whole beyond this).
POINT_MEMO = 500_000


@dataclass(kw_only=True)
class Plan:
    """Everything one batch will write and emit, before the write."""

    updates: list[CustomerUpdate] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    previous_names: list[str | None] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    applied_events: int = 0
    duplicate_events: int = 0
    event_times: list[float] = field(default_factory=list)  # of folded events
    broker_times: list[float] = field(default_factory=list)  # seconds, of folded events

    def changes(self, results: Sequence[WriteResult]) -> list[SegmentChange]:
        """Segment changes of the writes that were applied (one per customer at most)."""
        out: dict[str, SegmentChange] = {}
        for u, r, reason, prev_name in zip(
            self.updates, results, self.reasons, self.previous_names, strict=True
        ):
            if not r.applied or r.previous_segment_id == u.segment_id:
                continue
            first = out.get(u.customer_id)
            out[u.customer_id] = SegmentChange(
                customer_id=u.customer_id,
                previous_segment_id=first.previous_segment_id if first else r.previous_segment_id,
                previous_segment_name=first.previous_segment_name if first else prev_name,
                segment_id=u.segment_id,
                segment_name=u.segment_name,
                model_version=u.model_version,
                event_ts=u.event_ts,
                reason=reason,
            )
        return list(out.values())


def evaluation_time(state: CustomerState, as_of: float | None) -> float:
    """When a customer's features are evaluated: its latest event time, or the snapshot.

    >>> evaluation_time(CustomerState(decay_ts=50.0), 80.0)
    80.0
    """
    times = [t for t in (state.decay_ts, as_of) if t is not None]
    return max(times) if times else 0.0


def swept_segment(value: str | None, version: str, stored: StoredCustomer) -> int | None:
    """The segment id holding the customer's online point, if a recency sweep re-assigned
    the customer since its last event (a marker for this model and this exact state).

    >>> from state.features import CustomerState
    >>> s = StoredCustomer(customer_id="c", state=CustomerState(decay_ts=5.0), segment_id=2)
    >>> swept_segment("m1|5|1", "m1", s), swept_segment("m1|6|1", "m1", s)
    (1, None)
    """
    if value is None or stored.state.decay_ts is None:
        return None
    parts = value.rsplit("|", 2)
    if len(parts) != 3 or parts[0] != version or parts[1] != K.number(stored.state.decay_ts):
        return None
    return int(parts[2]) if parts[2].lstrip("-").isdigit() else None


def previous_contribution(
    stored: StoredCustomer | None,
    model: SegmentModel,
    segmenter: OnlineSegmenter,
    marker: str | None = None,
) -> Contribution | None:
    """The point a stored customer contributes to the online model, rebuilt from its record.

    ``None`` for an unknown customer, or one last assigned by another model version.
    A sweep ``marker`` names the segment that holds the point when a sweep moved the
    customer's stored segment away from it.
    """
    if stored is None or stored.model_version != model.version or stored.segment_id is None:
        return None
    held = swept_segment(marker, model.version, stored)
    seg_id = held if held is not None else stored.segment_id
    index = next((i for i, s in enumerate(model.segments) if s.id == seg_id), None)
    if index is None:
        return None
    at = evaluation_time(stored.state, stored.as_of)
    x = derive(stored.state, at, half_life_days=model.half_life_days)
    point = segmenter.vectorize(x)
    return Contribution(
        point=tuple(float(v) for v in point),
        segment=index,
        clock=at,
        model_version=model.version,
    )


@dataclass(slots=True)
class _Folded:
    customer_id: str
    stored: StoredCustomer | None
    events: list[Decoded]  # every event of the customer in the batch
    applied: list[Decoded]  # those folded (new to the stored state)
    runs: list[tuple[CustomerState, Decoded]]  # state after each partition run, last event
    x: dict[str, Any]  # derived features at ``at``
    at: float
    previous: _Prev | None


@dataclass(slots=True)
class _Prev:
    """A customer's previous contribution: its features (or its point, if remembered)."""

    x: dict[str, Any] | None
    point: np.ndarray | None
    segment: int  # index in the model's segments
    clock: float


class BatchProcessor:
    """Plans one batch: folds events per customer, assigns and learns segments.

    Holds the current model and online segmenter (swapped on hot reload by the service).
    """

    def __init__(self, model: SegmentModel, segmenter: OnlineSegmenter) -> None:
        self.model = model
        self.segmenter = segmenter
        self._segment_index = {s.id: i for i, s in enumerate(model.segments)}
        self._markers: Mapping[str, str] = {}
        # customer -> (state, evaluation time, point) of the last plan: the point of a state
        # this processor itself computed is not derived again when it comes back as the
        # stored state (the cache hands back the very same object; identity is checked).
        self._points: dict[str, tuple[CustomerState, float, np.ndarray]] = {}

    def plan(
        self,
        decoded: Sequence[Decoded],
        stored: Mapping[str, StoredCustomer | None],
        *,
        now: float,
        markers: Mapping[str, str] | None = None,
    ) -> Plan:
        """``markers``: recency-sweep markers of the batch's customers (consumer/sweep.py)."""
        plan = Plan()
        self._markers = markers or {}
        by_customer: dict[str, list[Decoded]] = {}
        for d in decoded:
            by_customer.setdefault(d.event.customer_id, []).append(d)
        folded: list[_Folded] = []
        for cid, events in by_customer.items():
            f = self._fold_with_retries(cid, events, stored.get(cid), plan)
            if f is not None:
                folded.append(f)
        folded, points, previous = self._vectorize(folded, plan)
        for f in folded:
            plan.applied_events += len(f.applied)
            plan.duplicate_events += len(f.events) - len(f.applied)
            plan.event_times.extend(d.event.ts for d in f.applied)
            plan.broker_times.extend(
                d.record.timestamp_ms / 1000.0
                for d in f.applied
                if d.record.timestamp_ms is not None
            )
        if not folded:
            return plan
        moves = self.segmenter.move_many(
            points, at=np.array([f.at for f in folded]), previous=previous
        )
        memo = self._points
        if len(memo) + len(folded) > POINT_MEMO:
            memo.clear()
        for f, point in zip(folded, points, strict=True):
            memo[f.customer_id] = (f.runs[-1][0], f.at, point.copy())
        segments, version = self.model.segments, self.model.version
        updates, reasons, previous_names = plan.updates, plan.reasons, plan.previous_names
        for f, index in zip(folded, moves.segments.tolist(), strict=True):
            segment = segments[index]
            reason = self._reason(f)
            prev_name = f.stored.segment_name if f.stored else None
            for state, last in f.runs:
                updates.append(
                    CustomerUpdate(
                        customer_id=f.customer_id,
                        state=state,
                        segment_id=segment.id,
                        segment_name=segment.name,
                        model_version=version,
                        updated_at=now,
                        partition=last.record.partition,
                        offset=last.record.offset,
                        event_ts=last.event.ts,
                    )
                )
                reasons.append(reason)
                previous_names.append(prev_name)
        return plan

    def _reason(self, f: _Folded) -> str:
        if f.stored is not None and f.stored.model_version not in (None, self.model.version):
            return "new_model"
        return "refund" if f.runs[-1][1].event.type == "refund" else "purchase"

    def _fold_with_retries(
        self, cid: str, events: list[Decoded], stored: StoredCustomer | None, plan: Plan
    ) -> _Folded | None:
        for attempt in range(1, POISON_ATTEMPTS + 1):
            try:
                return self._fold(cid, events, stored, plan)
            except Exception as exc:  # a bug in processing code: bounded retries, then DLQ
                if attempt < POISON_ATTEMPTS:
                    continue
                self._dead_letter(cid, events, exc, plan)
        return None

    def _fold(
        self, cid: str, events: list[Decoded], stored: StoredCustomer | None, plan: Plan
    ) -> _Folded | None:
        hl = self.model.half_life_days
        state = stored.state if stored is not None else CustomerState()
        offsets = dict(stored.offsets) if stored is not None else {}
        as_of = stored.as_of if stored is not None else None
        applied: list[Decoded] = []
        for d in events:
            p, o = d.record.partition, d.record.offset
            last = offsets.get(p)
            if (last is not None and o <= last) or (as_of is not None and d.event.ts <= as_of):
                continue  # already in the stored state
            offsets[p] = o
            applied.append(d)
        if not applied:
            plan.duplicate_events += len(events)
            return None
        runs: list[tuple[CustomerState, Decoded]] = []
        for _, group in groupby(applied, key=_partition):
            run = list(group)
            state = fold_events([d.event for d in run], state, half_life_days=hl)
            runs.append((state, run[-1]))
        at = evaluation_time(state, as_of)
        x = derive(state, at, half_life_days=hl)
        previous = None
        if stored is not None and stored.model_version == self.model.version:
            held = swept_segment(self._markers.get(cid), self.model.version, stored)
            seg_id = held if held is not None else stored.segment_id
            index = self._segment_index.get(seg_id)  # type: ignore[arg-type]
            if index is not None:
                p_at = evaluation_time(stored.state, stored.as_of)
                known = self._points.get(cid)
                if known is not None and known[0] is stored.state and known[1] == p_at:
                    previous = _Prev(None, known[2], index, p_at)
                else:
                    previous = _Prev(
                        derive(stored.state, p_at, half_life_days=hl), None, index, p_at
                    )
        return _Folded(cid, stored, events, applied, runs, x, at, previous)

    def _vectorize(
        self, folded: list[_Folded], plan: Plan
    ) -> tuple[list[_Folded], np.ndarray, Previous]:
        """Points of the new and previous features, all customers at once (schema-guarded).

        A customer whose features fail the guard (or give a non-finite point) is poison:
        its events are dead-lettered and it is left out.
        """
        seg = self.segmenter
        d = len(self.model.features)
        to_derive = [f.previous for f in folded if f.previous is not None and f.previous.x]
        try:
            points = seg.vectorize_many([f.x for f in folded])
            prev_points = seg.vectorize_many([p.x for p in to_derive])  # type: ignore[misc]
            if not (np.isfinite(points).all() and np.isfinite(prev_points).all()):
                raise ValueError("non-finite feature vector")
        except Exception:  # find the culprits one by one (rare path)
            kept = []
            for f in folded:
                try:
                    ok = np.isfinite(seg.vectorize(f.x)).all()
                    if f.previous is not None and f.previous.x is not None:
                        ok = ok and np.isfinite(seg.vectorize(f.previous.x)).all()
                    if not ok:
                        raise ValueError(f"non-finite feature vector for {f.customer_id}")
                    kept.append(f)
                except Exception as exc:  # poison: dead-letter, keep the batch going
                    self._dead_letter(f.customer_id, f.events, exc, plan)
            return self._vectorize(kept, plan) if kept else ([], np.zeros((0, 0)), _NO_PREV)
        for p, point in zip(to_derive, prev_points.reshape(-1, d), strict=True):
            p.point = point
        mask = np.array([f.previous is not None for f in folded], dtype=bool)
        full = np.zeros((len(folded), d))
        for i, f in enumerate(folded):
            if f.previous is not None:
                full[i] = f.previous.point
        prev = Previous(
            points=full,
            segments=np.array([f.previous.segment if f.previous else 0 for f in folded], dtype=int),
            clocks=np.array([f.previous.clock if f.previous else 0.0 for f in folded]),
            mask=mask,
        )
        return folded, points, prev

    def _dead_letter(self, cid: str, events: list[Decoded], exc: Exception, plan: Plan) -> None:
        reason = f"processing_error:{type(exc).__name__}"
        logger.error(
            "poison customer=%s events=%d reason=%s detail=%r", cid, len(events), reason, str(exc)
        )
        plan.dead_letters.extend(
            DeadLetter(record=d.record, reason=reason, detail=str(exc)) for d in events
        )


def _partition(d: Decoded) -> int:
    return d.record.partition


_NO_PREV = Previous(
    points=np.zeros((0, 0)),
    segments=np.zeros(0, dtype=int),
    clocks=np.zeros(0),
    mask=np.zeros(0, dtype=bool),
)


class Markers(Protocol):
    """Recency-sweep markers (``consumer.sweep.SweepMarkers`` in Redis)."""

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, str]: ...

    def delete_many(self, customer_ids: Iterable[str]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """What one batch did: the plan, the store's answers, changes and dead letters."""

    plan: Plan
    results: list[WriteResult]
    changes: list[SegmentChange]
    dead_letters: list[DeadLetter]
    decoded: int


def run_step(
    records: Sequence[SourceRecord],
    store: CustomerStore,
    processor: BatchProcessor,
    *,
    now: float,
    currency: str | None = None,
    cache: StateCache | None = None,
    markers: Markers | None = None,
) -> StepResult:
    """Decode, read, plan, write: one batch against a :class:`~state.store.CustomerStore`.

    Two store round trips (``get_many`` for customers not in ``cache``, ``apply_many``).
    On a store error the exception propagates (the online model may have learnt and the
    cache may be stale: the caller restores the one and clears the other, see
    :class:`consumer.service.ConsumerService`).
    """
    decoded, dead = decode_records(records, now=now, currency=currency)
    ids = customer_ids(decoded)
    stored: dict[str, StoredCustomer | None] = {}
    if cache is not None:
        stored.update(cache.get_many(ids))
    missing = [c for c in ids if c not in stored]
    if missing:
        stored.update(store.get_many(missing))
    swept = markers.get_many(ids) if markers is not None and ids else {}
    plan = processor.plan(decoded, stored, now=now, markers=swept)
    results = store.apply_many(plan.updates) if plan.updates else []
    if cache is not None:
        cache.record(plan.updates, results, stored)
    if swept and markers is not None:  # the point moved with the new state: marker done
        written = {u.customer_id for u, r in zip(plan.updates, results, strict=True) if r.applied}
        markers.delete_many([cid for cid in swept if cid in written])
    return StepResult(
        plan=plan,
        results=results,
        changes=plan.changes(results),
        dead_letters=dead + plan.dead_letters,
        decoded=len(decoded),
    )
