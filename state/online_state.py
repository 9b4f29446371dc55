"""Sufficient statistics of the online segment model, and how instances merge them.

The online model (:mod:`state.online`) keeps, per cluster ``j``, a weighted sum of
points ``sums[j]`` and a total weight ``counts[j]`` in the model's scaled space; the
centroid is ``sums[j] / counts[j]``. Everything is valued at a ``clock`` (event time
in seconds, or a count of updates) and forgets with a half-life: advancing the clock by
``dt`` multiplies both by ``2 ** (-dt / half_life)``. This is Spark StreamingKMeans'
rule ``c' = (c*n*a + x*m) / (n*a + m)``, ``n' = n*a + m`` written as sums.

Because the statistics are sums, instances merge by adding what each learnt since it
last pulled the shared state (its :class:`Delta`), all brought to a common clock:

>>> import numpy as np
>>> base = OnlineState(sums=np.array([[0.0], [10.0]]), counts=np.array([1.0, 1.0]), clock=0.0)
>>> a = Delta(sums=np.array([[2.0], [0.0]]), counts=np.array([1.0, 0.0]), since=0.0, clock=0.0)
>>> b = Delta(sums=np.array([[0.0], [12.0]]), counts=np.array([0.0, 1.0]), since=0.0, clock=0.0)
>>> merge(base, [a, b], half_life=None, clock_kind="seconds").centroids().tolist()
[[1.0], [11.0]]

No I/O here: the consumer stores :meth:`OnlineState.to_dict` as JSON in Redis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ClockKind = Literal["seconds", "events", "none"]

#: Below this total weight a cluster is considered empty (its centre stays where it was).
MIN_WEIGHT = 1e-9


def decay(elapsed: float | np.ndarray, half_life: float | None) -> Any:
    """Weight left after ``elapsed`` clock units: ``2 ** (-elapsed / half_life)``.

    Negative elapsed time (a contribution from the future) counts as zero; no half-life
    means no forgetting.

    >>> decay(10.0, 10.0)
    0.5
    >>> decay(-5.0, 10.0), decay(3.0, None)
    (1.0, 1.0)
    """
    if half_life is None:
        return np.ones_like(elapsed) if isinstance(elapsed, np.ndarray) else 1.0
    e = np.maximum(elapsed, 0.0)
    out = np.exp2(-e / half_life)
    return out if isinstance(elapsed, np.ndarray) else float(out)


@dataclass(frozen=True, kw_only=True)
class Contribution:
    """What one customer currently contributes to the model: a point, its cluster, when.

    Kept with the customer (as :meth:`to_list`) so that the next update can *move* the
    point instead of adding another one.
    """

    point: tuple[float, ...]
    segment: int
    clock: float
    model_version: str = ""

    def to_list(self) -> list[Any]:
        """Compact JSON form ``[model_version, segment, clock, *point]``."""
        return [self.model_version, self.segment, self.clock, *self.point]

    @classmethod
    def from_list(cls, raw: Sequence[Any]) -> Contribution:
        """Inverse of :meth:`to_list`.

        >>> c = Contribution(point=(1.5, -2.0), segment=3, clock=7.0, model_version="v1")
        >>> Contribution.from_list(c.to_list()) == c
        True
        """
        return cls(
            model_version=str(raw[0]),
            segment=int(raw[1]),
            clock=float(raw[2]),
            point=tuple(float(v) for v in raw[3:]),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class OnlineState:
    """Per-cluster weighted sums and weights, valued at ``clock`` (``None``: not started)."""

    sums: np.ndarray
    counts: np.ndarray
    clock: float | None

    def centroids(self, fallback: np.ndarray | None = None) -> np.ndarray:
        """``sums / counts``; a cluster with (almost) no weight keeps its ``fallback`` centre."""
        safe = np.where(self.counts > MIN_WEIGHT, self.counts, 1.0)
        c = self.sums / safe[:, None]
        if fallback is not None:
            c = np.where((self.counts > MIN_WEIGHT)[:, None], c, fallback)
        return c

    def decayed(self, elapsed: float, half_life: float | None) -> tuple[np.ndarray, np.ndarray]:
        a = decay(elapsed, half_life)
        return self.sums * a, self.counts * a

    def to_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.tolist(), "counts": self.counts.tolist(), "clock": self.clock}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OnlineState:
        return cls(
            sums=np.asarray(d["sums"], dtype=float),
            counts=np.asarray(d["counts"], dtype=float),
            clock=None if d.get("clock") is None else float(d["clock"]),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Delta:
    """What an instance learnt between clock ``since`` and ``clock``, valued at ``clock``.

    Sums and counts may be negative where customers moved out of a cluster.
    """

    sums: np.ndarray
    counts: np.ndarray
    since: float | None
    clock: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sums": self.sums.tolist(),
            "counts": self.counts.tolist(),
            "since": self.since,
            "clock": self.clock,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Delta:
        return cls(
            sums=np.asarray(d["sums"], dtype=float),
            counts=np.asarray(d["counts"], dtype=float),
            since=None if d.get("since") is None else float(d["since"]),
            clock=None if d.get("clock") is None else float(d["clock"]),
        )


def _elapsed(start: float | None, end: float | None) -> float:
    if start is None or end is None or not math.isfinite(start):
        return 0.0
    return max(end - start, 0.0)


def delta_between(base: OnlineState, local: OnlineState, half_life: float | None) -> Delta:
    """``local`` minus ``base`` brought forward to ``local.clock``: what was learnt locally.

    >>> s0 = OnlineState(sums=np.array([[4.0]]), counts=np.array([2.0]), clock=0.0)
    >>> s1 = OnlineState(sums=np.array([[7.0]]), counts=np.array([3.0]), clock=0.0)
    >>> d = delta_between(s0, s1, None)
    >>> d.sums.tolist(), d.counts.tolist()
    ([[3.0]], [1.0])
    """
    sums, counts = base.decayed(_elapsed(base.clock, local.clock), half_life)
    return Delta(
        sums=local.sums - sums,
        counts=local.counts - counts,
        since=base.clock,
        clock=local.clock,
    )


def merge(
    shared: OnlineState,
    deltas: Sequence[Delta],
    *,
    half_life: float | None,
    clock_kind: ClockKind,
) -> OnlineState:
    """Fold instances' deltas into the shared state.

    With a clock in seconds, everything is brought to the latest clock. With a clock in
    events, the shared clock advances by the events all deltas saw, and each delta is
    treated as if the other instances' events came after it (exact for one instance,
    an approximation within one sync interval for several). Counts are floored at zero.
    """
    clock: float | None
    if clock_kind == "events":
        spans = [_elapsed(d.since, d.clock) for d in deltas]
        total = float(sum(spans))
        clock = (shared.clock or 0.0) + total
        sums, counts = shared.decayed(total, half_life)
        for d, span in zip(deltas, spans, strict=True):
            a = decay(total - span, half_life)
            sums = sums + d.sums * a
            counts = counts + d.counts * a
    else:
        clocks = [c for c in [shared.clock, *(d.clock for d in deltas)] if c is not None]
        clock = max(clocks) if clocks else None
        sums, counts = shared.decayed(_elapsed(shared.clock, clock), half_life)
        for d in deltas:
            a = decay(_elapsed(d.clock, clock), half_life)
            sums = sums + d.sums * a
            counts = counts + d.counts * a
    empty = counts <= MIN_WEIGHT
    if empty.any():
        # a cluster drained by moves: no weight left (the estimator keeps its last centre)
        counts = np.where(empty, 0.0, counts)
        sums = np.where(empty[:, None], 0.0, sums)
    return OnlineState(sums=sums, counts=counts, clock=clock)
