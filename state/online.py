"""The online segment model: a river clusterer seeded from the published offline model.

:class:`OnlineSegmenter` assigns customers to the nearest centroid in the model's space
(same features, transforms, imputation and scaler as :meth:`SegmentModel.vector`) and
keeps the centroids current as customers change.

**Count-weighted, with forgetting.** Each cluster carries a weight; the offline cluster
sizes are its pseudo-counts, so a centroid moves by ``1 / weight`` of the way to a new
point, like Spark StreamingKMeans (``c' = (c*n*a + x*m) / (n*a + m)``), never by river
``KMeans``' fixed ``halflife=0.5`` step that drags a centre halfway to every point.
Forgetting is a half-life in events (``half_life_events``) or in event time
(``half_life_seconds``); with neither, nothing is forgotten.

**One customer, one point.** A customer is a point in feature space, not a stream of
points: an update *moves* the customer's point. The caller hands back the customer's
previous :class:`~state.online_state.Contribution` (its point, cluster and clock, kept
with the customer), whose remaining weight is removed before the new point is added.
A customer who buys a hundred times a month therefore weighs as much as one who buys
once, and the online centroids track the mean of the customers' *current* states, which
is what an offline refit on a snapshot computes. Contributions from another model
version are not removed (a new model re-seeds from its own cluster sizes).

**Schema guard.** Before any maths, :meth:`vectorize` checks the input: a model feature
that is missing or ``None``/NaN is imputed as the model says (an error if the model has
no imputation for it); a non-numeric value is an error; keys the model does not use are
ignored, or rejected with ``strict=True``. No feature is ever invented.

>>> from state.model import SegmentModel
>>> model = SegmentModel.from_dict({
...     "schema_version": 1, "version": "v1", "features": ["spend"], "transforms": {},
...     "imputation": {"spend": 0.0}, "scaler": {"kind": "none", "mean": [0.0], "scale": [1.0]},
...     "centroids": [[0.0], [10.0]], "weights": [3.0, 1.0],
...     "segments": [{"id": 1, "name": "Low"}, {"id": 2, "name": "High"}], "algorithm": "kmeans"})
>>> seg = OnlineSegmenter.from_model(model, half_life_events=1000)
>>> seg.predict_one({"spend": 7.0})
1
>>> seg.learn_one({"spend": 14.0})
>>> seg.centroids.round(3).tolist()
[[0.0], [12.001]]
>>> seg.predict_one({"spend": 7.0, "unused": 1.0})
1
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from river import base

from state.errors import ConfigError, SegstreamError
from state.model import SegmentModel
from state.online_state import (
    MIN_WEIGHT,
    ClockKind,
    Contribution,
    Delta,
    OnlineState,
    decay,
    delta_between,
)

_PLAIN = (float, int, type(None))


class FeatureSchemaError(SegstreamError, ValueError):
    """Input features do not fit the model's feature schema."""


@dataclass(frozen=True, kw_only=True, eq=False)
class Moves:
    """Outcome of a batch update: per point, the cluster index it joined and its clock."""

    segments: np.ndarray
    clocks: np.ndarray
    model_version: str

    def contribution(self, i: int, point: np.ndarray) -> Contribution:
        """The :class:`Contribution` to keep with the customer of row ``i``."""
        return Contribution(
            point=tuple(float(v) for v in point),
            segment=int(self.segments[i]),
            clock=float(self.clocks[i]),
            model_version=self.model_version,
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Previous:
    """Customers' previous contributions as arrays aligned with a batch (``mask``: has one)."""

    points: np.ndarray
    segments: np.ndarray
    clocks: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_contributions(
        cls, items: Sequence[Contribution | None], model_version: str, n_features: int
    ) -> Previous:
        """Arrays from contributions; those of another model version or shape are left out."""
        m = len(items)
        points = np.zeros((m, n_features))
        segments = np.zeros(m, dtype=int)
        clocks = np.zeros(m)
        mask = np.zeros(m, dtype=bool)
        for i, c in enumerate(items):
            if c is None or c.model_version not in ("", model_version):
                continue
            if len(c.point) != n_features:
                continue
            points[i], segments[i], clocks[i], mask[i] = c.point, c.segment, c.clock, True
        return cls(points=points, segments=segments, clocks=clocks, mask=mask)


class OnlineSegmenter(base.Clusterer):
    """Nearest-centroid clusterer seeded from a :class:`SegmentModel`, learning by moves.

    Parameters
    ----------
    model
        The published offline model: features, transforms, scaler, centroids, weights.
    half_life_events
        Forget with this half-life counted in updates (mutually exclusive with the next).
    half_life_seconds
        Forget with this half-life in event time (``at=`` is then required to learn).
    strict
        Reject input keys that are not model features instead of ignoring them.
    """

    def __init__(
        self,
        model: SegmentModel,
        half_life_events: float | None = None,
        half_life_seconds: float | None = None,
        strict: bool = False,
    ) -> None:
        self.model = model
        self.half_life_events = half_life_events
        self.half_life_seconds = half_life_seconds
        self.strict = strict
        if half_life_events is not None and half_life_seconds is not None:
            raise ConfigError("give half_life_events or half_life_seconds, not both")
        for hl in (half_life_events, half_life_seconds):
            if hl is not None and not hl > 0:
                raise ConfigError(f"half-life must be positive, got {hl!r}")
        self._features = frozenset(model.features)
        self.load_state(self.seed_state())

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: SegmentModel,
        *,
        half_life_events: float | None = None,
        half_life_seconds: float | None = None,
        strict: bool = False,
    ) -> OnlineSegmenter:
        """The one factory: seed from a published model (also how a new model is picked up)."""
        return cls(
            model,
            half_life_events=half_life_events,
            half_life_seconds=half_life_seconds,
            strict=strict,
        )

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"model": _tiny_model(), "half_life_events": 100.0}

    @property
    def clock_kind(self) -> ClockKind:
        if self.half_life_events is not None:
            return "events"
        if self.half_life_seconds is not None:
            return "seconds"
        return "none"

    @property
    def half_life(self) -> float | None:
        """The half-life in clock units (events or seconds), ``None`` without forgetting."""
        return (
            self.half_life_events if self.half_life_events is not None else self.half_life_seconds
        )

    def seed_state(self) -> OnlineState:
        """Offline centroids with cluster sizes as pseudo-counts, at the model's clock."""
        w = np.asarray(self.model.weights, dtype=float)
        c = np.asarray(self.model.centroids, dtype=float)
        clock = {"events": 0.0, "seconds": self.model.as_of, "none": None}[self.clock_kind]
        return OnlineState(sums=c * w[:, None], counts=w.copy(), clock=clock)

    # -- state ------------------------------------------------------------------------------

    def state(self) -> OnlineState:
        """A copy of the current sufficient statistics."""
        return OnlineState(sums=self._sums.copy(), counts=self._counts.copy(), clock=self._clock)

    def load_state(self, state: OnlineState) -> None:
        """Replace the statistics (after pulling the shared state of all instances)."""
        k, d = len(self.model.centroids), len(self.model.features)
        if state.sums.shape != (k, d) or state.counts.shape != (k,):
            raise FeatureSchemaError(
                f"state of shape {state.sums.shape} does not fit a model with k={k}, d={d}"
            )
        fallback = getattr(self, "_centers", np.asarray(self.model.centroids, dtype=float))
        self._sums = state.sums.astype(float, copy=True)
        self._counts = state.counts.astype(float, copy=True)
        self._clock = state.clock
        self._centers = state.centroids(fallback)

    def delta_since(self, base: OnlineState) -> Delta:
        """What this instance learnt since it loaded ``base``."""
        return delta_between(base, self.state(), self.half_life)

    @property
    def centroids(self) -> np.ndarray:
        """Current centres in the model's scaled space (a copy)."""
        return self._centers.copy()

    @property
    def weights(self) -> np.ndarray:
        """Current cluster weights (pseudo-counts after forgetting), a copy."""
        return self._counts.copy()

    @property
    def clock(self) -> float | None:
        return self._clock

    # -- schema guard -----------------------------------------------------------------------

    def vectorize(self, x: Mapping[Any, Any]) -> np.ndarray:
        """Check ``x`` against the model's feature schema, then transform and scale it."""
        if self.strict:
            unknown = set(x) - self._features
            if unknown:
                raise FeatureSchemaError(
                    f"features not in model {self.model.version}: {sorted(unknown)}"
                )
        clean: dict[str, float | None] = {}
        for name in self.model.features:
            v = x.get(name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                if name not in self.model.imputation:
                    raise FeatureSchemaError(
                        f"feature {name!r} missing and the model has no imputation"
                    )
                clean[name] = None
            elif isinstance(v, Real) and not isinstance(v, bool):
                clean[name] = float(v)
            else:
                raise FeatureSchemaError(f"feature {name!r} is not a number: {v!r}")
        return self.model.vector(clean)

    def vectorize_many(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """:meth:`vectorize` for many rows, as a ``(len(rows), n_features)`` matrix.

        Column-wise with numpy when every value is a plain ``float``/``int``/``None``
        (the same maths as :meth:`SegmentModel.vector`); row by row otherwise, so that
        errors are those of :meth:`vectorize`.
        """
        m = self.model
        out = np.empty((len(rows), len(m.features)))
        if self.strict or not rows:
            for i, row in enumerate(rows):
                out[i] = self.vectorize(row)
            return out
        for j, name in enumerate(m.features):
            values = [row.get(name) for row in rows]
            if not all(type(v) in _PLAIN for v in values):
                return self._vectorize_rows(rows)
            col = np.array(values, dtype=float)  # None -> nan
            missing = ~np.isfinite(col)
            if missing.any() and name not in m.imputation:
                return self._vectorize_rows(rows)  # raises the precise error
            kind = m.transforms.get(name, "identity")
            if kind == "log1p":  # math.log1p, as SegmentModel.vector (numpy's differs by 1 ulp)
                log1p = math.log1p
                col = np.array([log1p(v) if v > 0.0 else 0.0 for v in col.tolist()])
            elif kind != "identity":
                return self._vectorize_rows(rows)
            col[missing] = m.imputation.get(name, 0.0)
            out[:, j] = (col - m.scaler_mean[j]) / m.scaler_scale[j]
        return out

    def _vectorize_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.empty((len(rows), len(self.model.features)))
        for i, row in enumerate(rows):
            out[i] = self.vectorize(row)
        return out

    # -- river API --------------------------------------------------------------------------

    def predict_one(self, x: Mapping[Any, Any]) -> int:
        """Index of the nearest current centroid (``model.segments[i]`` is the segment)."""
        return int(self.predict_points(self.vectorize(x)[None, :])[0])

    def predict_points(self, points: np.ndarray) -> np.ndarray:
        """Nearest current centroid for each row of an already vectorised matrix."""
        d = ((points[:, None, :] - self._centers[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def learn_one(
        self,
        x: Mapping[Any, Any],
        *,
        at: float | None = None,
        previous: Contribution | None = None,
    ) -> None:
        """Move one customer's point to ``x`` (removing ``previous``, if given)."""
        self.move_many(
            self.vectorize(x)[None, :],
            at=None if at is None else [at],
            previous=[previous],
        )

    # -- batch path -------------------------------------------------------------------------

    def _clocks(self, m: int, at: Sequence[float] | np.ndarray | None) -> np.ndarray:
        c0 = self._clock
        kind = self.clock_kind
        if kind == "events":
            return (c0 or 0.0) + np.arange(1, m + 1, dtype=float)
        if kind == "seconds":
            if at is None:
                raise ValueError("a half-life in seconds needs the event time: pass at=")
            t = np.asarray(at, dtype=float)
            start = -np.inf if c0 is None else c0
            return np.maximum.accumulate(np.maximum(t, start))
        return np.zeros(m) if at is None else np.asarray(at, dtype=float)

    def move_many(
        self,
        points: np.ndarray,
        *,
        at: Sequence[float] | np.ndarray | None = None,
        previous: Previous | Sequence[Contribution | None] | None = None,
    ) -> Moves:
        """Mini-batch update: assign every row with the centres at batch start, then move.

        Row ``i`` happens at clock ``clocks[i]`` (one event each, or its event time); its
        new point is added with weight 1 and its ``previous[i]`` contribution, if any, is
        removed with the weight it has left. With assignments that do not change within
        the batch this equals ``learn_one`` row by row (tested).
        """
        m, k = len(points), len(self._counts)
        segments = self.predict_points(points) if m else np.zeros(0, dtype=int)
        clocks = self._clocks(m, at)
        if m == 0:
            return Moves(segments=segments, clocks=clocks, model_version=self.model.version)
        hl = self.half_life
        end = float(clocks[-1])
        if self.clock_kind != "none" and self._clock is not None:
            a0 = decay(end - self._clock, hl)
            self._sums *= a0
            self._counts *= a0
        w_add = decay(end - clocks, hl)
        for j in range(points.shape[1]):
            self._sums[:, j] += np.bincount(segments, weights=points[:, j] * w_add, minlength=k)
        self._counts += np.bincount(segments, weights=w_add, minlength=k)
        if previous is not None:
            if not isinstance(previous, Previous):
                previous = Previous.from_contributions(
                    previous, self.model.version, len(self.model.features)
                )
            self._remove(previous, clocks, end)
        empty = self._counts <= MIN_WEIGHT
        self._counts[empty] = 0.0
        self._sums[empty] = 0.0
        live = ~empty
        self._centers[live] = self._sums[live] / self._counts[live, None]
        if self.clock_kind != "none":
            self._clock = end
        return Moves(segments=segments, clocks=clocks, model_version=self.model.version)

    def _remove(self, prev: Previous, clocks: np.ndarray, end: float) -> None:
        ok = prev.mask & (prev.segments >= 0) & (prev.segments < len(self._counts))
        if not ok.any():
            return
        pts, seg, pc, ci = prev.points[ok], prev.segments[ok], prev.clocks[ok], clocks[ok]
        hl = self.half_life if self.clock_kind != "none" else None
        w = decay(ci - pc, hl) * decay(end - ci, hl)
        k = len(self._counts)
        for j in range(pts.shape[1]):
            self._sums[:, j] -= np.bincount(seg, weights=pts[:, j] * w, minlength=k)
        self._counts -= np.bincount(seg, weights=w, minlength=k)

    def offline_contribution(self, x: Mapping[str, Any]) -> Contribution:
        """The contribution a customer of the offline snapshot has in the seed weights.

        Its offline segment (nearest *offline* centroid) at the seed clock: removing it on
        the customer's first online update keeps the customer counted once.
        """
        point = self.vectorize(x)
        return Contribution(
            point=tuple(float(v) for v in point),
            segment=int(self.model.nearest(point)[0]),
            clock=float(self.seed_state().clock or 0.0),
            model_version=self.model.version,
        )


def _tiny_model() -> SegmentModel:
    return SegmentModel.from_dict(
        {
            "schema_version": 1,
            "version": "test",
            "features": ["x", "y"],
            "imputation": {"x": 0.0, "y": 0.0},
            "scaler": {"kind": "none", "mean": [0.0, 0.0], "scale": [1.0, 1.0]},
            "centroids": [[0.0, 0.0], [5.0, 5.0]],
            "weights": [10.0, 10.0],
            "segments": [{"id": 1, "name": "A"}, {"id": 2, "name": "B"}],
            "algorithm": "kmeans",
        }
    )
