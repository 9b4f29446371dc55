"""The published segmentation model: what the offline job writes and the consumer reads.

A model is centroid based: features -> transforms -> imputation -> scaler ->
nearest centroid. It is plain data (JSON) plus pure functions; no I/O here.

>>> m = SegmentModel.from_dict({
...     "schema_version": 1, "version": "v1", "created_at": 0.0, "as_of": None,
...     "half_life_days": 30.0, "features": ["a", "b"], "transforms": {"a": "log1p"},
...     "imputation": {"a": 0.0, "b": 0.0},
...     "scaler": {"kind": "none", "mean": [0.0, 0.0], "scale": [1.0, 1.0]},
...     "centroids": [[0.0, 0.0], [1.0, 10.0]], "weights": [5.0, 5.0],
...     "segments": [{"id": 1, "name": "Low"}, {"id": 2, "name": "High"}],
...     "algorithm": "kmeans"})
>>> m.assign({"a": 1.0, "b": 9.0}).name
'High'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from state.errors import UnknownSchemaVersion

MODEL_SCHEMA_VERSION = 1
TRANSFORMS = {
    "identity": lambda v: v,
    "log1p": lambda v: math.log1p(max(v, 0.0)),
}


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A segment as people see it: a stable business id, a name and what to do about it."""

    id: int
    name: str
    description: str = ""
    action: str = ""
    profile: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SegmentModel:
    """A versioned, centroid-based segmentation model (registry schema v1)."""

    version: str
    features: tuple[str, ...]
    transforms: dict[str, str]
    imputation: dict[str, float]
    scaler_kind: str
    scaler_mean: tuple[float, ...]
    scaler_scale: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]
    weights: tuple[float, ...]
    segments: tuple[Segment, ...]
    algorithm: str
    created_at: float = 0.0
    as_of: float | None = None
    half_life_days: float = 30.0
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    library_versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = MODEL_SCHEMA_VERSION

    # -- (de)serialisation ----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentModel:
        sv = d.get("schema_version")
        if sv != MODEL_SCHEMA_VERSION:
            raise UnknownSchemaVersion(
                f"model schema_version {sv!r} is not supported (this code reads {MODEL_SCHEMA_VERSION})"
            )
        scaler = d["scaler"]
        known = {
            "schema_version", "version", "features", "transforms", "imputation", "scaler",
            "centroids", "weights", "segments", "algorithm", "created_at", "as_of",
            "half_life_days", "metrics", "data_fingerprint", "library_versions",
        }  # fmt: skip
        return cls(
            version=str(d["version"]),
            features=tuple(d["features"]),
            transforms=dict(d.get("transforms", {})),
            imputation={k: float(v) for k, v in d.get("imputation", {}).items()},
            scaler_kind=scaler.get("kind", "none"),
            scaler_mean=tuple(float(v) for v in scaler["mean"]),
            scaler_scale=tuple(float(v) for v in scaler["scale"]),
            centroids=tuple(tuple(float(v) for v in c) for c in d["centroids"]),
            weights=tuple(float(w) for w in d["weights"]),
            segments=tuple(Segment(**s) for s in d["segments"]),
            algorithm=d["algorithm"],
            created_at=float(d.get("created_at", 0.0)),
            as_of=d.get("as_of"),
            half_life_days=float(d.get("half_life_days", 30.0)),
            metrics=dict(d.get("metrics", {})),
            data_fingerprint=d.get("data_fingerprint", ""),
            library_versions=dict(d.get("library_versions", {})),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "version": self.version,
            "created_at": self.created_at,
            "as_of": self.as_of,
            "half_life_days": self.half_life_days,
            "features": list(self.features),
            "transforms": dict(self.transforms),
            "imputation": dict(self.imputation),
            "scaler": {
                "kind": self.scaler_kind,
                "mean": list(self.scaler_mean),
                "scale": list(self.scaler_scale),
            },
            "centroids": [list(c) for c in self.centroids],
            "weights": list(self.weights),
            "segments": [
                {
                    "id": s.id,
                    "name": s.name,
                    "description": s.description,
                    "action": s.action,
                    "profile": s.profile,
                }
                for s in self.segments
            ],
            "algorithm": self.algorithm,
            "metrics": self.metrics,
            "data_fingerprint": self.data_fingerprint,
            "library_versions": self.library_versions,
            **self.extra,
        }

    # -- pure maths -------------------------------------------------------------------------------

    def vector(self, values: Mapping[str, float | None]) -> np.ndarray:
        """Features -> transformed, imputed, scaled vector in the model's space."""
        out = np.empty(len(self.features))
        for i, name in enumerate(self.features):
            v = values.get(name)
            if v is None or not math.isfinite(float(v)):
                v = self.imputation.get(name, 0.0)
            else:
                v = TRANSFORMS[self.transforms.get(name, "identity")](float(v))
            out[i] = (v - self.scaler_mean[i]) / self.scaler_scale[i]
        return out

    def matrix(self, rows: Sequence[Mapping[str, float | None]]) -> np.ndarray:
        """Many feature dicts -> matrix (one row each)."""
        return np.array([self.vector(r) for r in rows]).reshape(len(rows), len(self.features))

    def nearest(self, x: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid for each row of ``x`` (2-D) or for ``x`` (1-D)."""
        c = np.asarray(self.centroids)
        xx = np.atleast_2d(x)
        d = ((xx[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        return d.argmin(axis=1)

    def assign(self, values: Mapping[str, float | None]) -> Segment:
        """The segment of one customer given its feature values."""
        return self.segments[int(self.nearest(self.vector(values))[0])]
