"""The offline fit: load -> clean -> per-customer features -> select -> name -> FitResult.

Features of customers with transactions come from the state/ rules
(:func:`state.batch.batch_states` then :func:`state.batch.derive_frame` at ``as_of``),
never from a second implementation. ``as_of`` defaults to the latest event time.

Model space: each feature is transformed (``log1p`` for money and counts, identity
otherwise), then scaled (``standard`` or ``none``); both are stored in the model so the
consumer transforms identically.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

from offline import clean, customer_table, naming, stable_ids
from offline.result import CleaningStep, FitResult
from offline.selection import ALGORITHMS, SegmentSelector
from state.errors import ConfigError
from state.features import DEFAULT_HALF_LIFE_DAYS
from state.model import Segment, SegmentModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """Everything ``segstream offline fit`` can be told (frozen, keyword-only)."""

    features: tuple[str, ...] | None = None
    algorithms: tuple[str, ...] = ALGORITHMS
    k_range: tuple[int, ...] = tuple(range(2, 11))
    as_of: float | None = None
    seed: int = 42
    outliers: str = "cap"
    scaler: str = "standard"
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    n_bootstrap: int = 10
    silhouette_sample: int = 5_000
    selection_sample: int = 20_000
    version: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Previous:
    """The previous fit, for stable ids and the transition matrix."""

    model: SegmentModel
    assignments: pd.Series | None = None  # segment id by customer id


Progress = Callable[[str], None]


@contextmanager
def _stage(name: str, timings: dict[str, float], progress: Progress | None) -> Iterator[None]:
    if progress is not None:
        progress(name)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    logger.info("fit stage=%s seconds=%.3f", name.replace(" ", "_"), timings[name])


def _library_versions() -> dict[str, str]:
    out = {}
    for lib in ("segstream", "scikit-learn", "numpy", "pandas", "scipy"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:  # pragma: no cover
            out[lib] = "unknown"
    return out


def _number(value: object) -> float | None:
    """A finite float for the model's JSON, else None."""
    v = float(value)  # type: ignore[arg-type]
    return v if np.isfinite(v) else None


def _order_by_size(labels: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.bincount(labels, minlength=len(centroids))
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels], centroids[order]


def fit(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame | None,
    options: FitOptions | None = None,
    *,
    previous: Previous | None = None,
    progress: Progress | None = None,
) -> FitResult:
    """Run the whole offline job on loaded tables; see the module docstring."""
    opts = options or FitOptions()
    timings: dict[str, float] = {}
    steps: list[CleaningStep] = []
    as_of = opts.as_of
    with _stage("clean", timings, progress):
        if customers is not None:
            customers, s = clean.clean_customers(customers)
            steps += s
        if transactions is not None:
            transactions, s = clean.clean_transactions(transactions, as_of=as_of)
            steps += s
            if not len(transactions):
                raise ConfigError("no transactions left after cleaning (see the log)")
            if as_of is None:
                as_of = float(transactions["ts"].max())
    with _stage("features", timings, progress):
        frame, states = customer_table.customer_features(
            customers, transactions, as_of, opts.half_life_days
        )
        states = customer_table.seed_states(states, frame, as_of)
        has_tx = transactions is not None
        cust_cols = (
            [c for c in customers.columns if c != "customer_id"] if customers is not None else []
        )
        features = list(opts.features or customer_table.default_features(frame, cust_cols, has_tx))
        unknown = [f for f in features if f not in frame.columns]
        if unknown:
            raise ConfigError(f"unknown features {unknown}; available: {list(frame.columns)}")
        non_numeric = [f for f in features if not pd.api.types.is_numeric_dtype(frame[f])]
        if non_numeric:
            raise ConfigError(f"features must be numeric, not {non_numeric}")
        dropped = [f for f in features if frame[f].nunique(dropna=True) <= 1]
        features = [f for f in features if f not in dropped]
        if not features:
            raise ConfigError(f"every chosen feature is constant: {dropped}")
        for f in features:  # customers missing from the customers table (joined data)
            miss = frame[f].isna()
            if miss.any():
                frame[f] = frame[f].fillna(float(frame[f].median()))
                steps.append(CleaningStep(rule="impute missing number with median (after join)",
                                          column=f, rows_affected=int(miss.sum()), action="imputed"))  # fmt: skip
        transforms = {f: "log1p" for f in features if f in customer_table.LOG1P_FEATURES}
        frame, s = clean.treat_outliers(frame, features, transforms, opts.outliers)
        steps += s
        X, Xt, imputation, mean, scale = customer_table.model_space(
            frame, features, transforms, opts.scaler
        )
    with _stage("model selection", timings, progress):
        selector = SegmentSelector(
            k_range=opts.k_range,
            algorithms=opts.algorithms,
            random_state=opts.seed,
            n_bootstrap=opts.n_bootstrap,
            silhouette_sample=opts.silhouette_sample,
            selection_sample=opts.selection_sample,
            progress=progress,
        ).fit(X)
        labels, centroids = _order_by_size(selector.labels_, selector.centroids_)
    with _stage("profiles", timings, progress):
        prev_c = None
        if previous is not None:
            prev_c = stable_ids.previous_in_new_space(previous.model, features, mean, scale)
        ids = stable_ids.match_ids(
            centroids,
            prev_c,
            [s.id for s in previous.model.segments] if prev_c is not None and previous else [],
            high_water=stable_ids.high_water(previous.model if previous else None),
        )
        category = customer_table.top_category(transactions, frame.index)
        profiles = naming.profile_segments(frame, features, Xt, labels, ids, category)
        names = naming.name_segments(profiles, features)
        sep = naming.separation(Xt, labels, features)
        rules, tree_agreement = naming.surrogate_rules(
            frame, features, labels, ids, random_state=opts.seed
        )
        out = frame.copy()
        id_arr = np.asarray(ids)
        out["segment_id"] = id_arr[labels]
        out["segment_name"] = names["name"].to_numpy()[labels]
        if has_tx:
            out = out.join(naming.rfm_scores(out["recency_days"], out["orders"], out["net_spend"]))
    weights = np.bincount(labels, minlength=len(ids)).astype(float)
    fingerprint = hashlib.sha256(
        ",".join(features).encode() + np.ascontiguousarray(Xt).tobytes()
    ).hexdigest()
    created = time.time()
    chosen = selector.comparison_[selector.comparison_["chosen"]].iloc[0]
    metrics = {
        "k": len(ids),
        "silhouette": _number(chosen["silhouette"]),
        "davies_bouldin": _number(chosen["davies_bouldin"]),
        "calinski_harabasz": _number(chosen["calinski_harabasz"]),
        "stability": _number(chosen["stability"]),
        "nearest_centroid_agreement": selector.nearest_centroid_agreement_,
        "tree_agreement": tree_agreement,
        "weak_structure": selector.weak_structure_,
        "silhouette_sample_size": selector.silhouette_sample_size_,
    }
    prof = naming.profile_dicts(profiles, features)
    model = SegmentModel(
        version=opts.version
        or f"m{time.strftime('%Y%m%d%H%M%S', time.gmtime(created))}-{fingerprint[:8]}",
        features=tuple(features),
        transforms=transforms,
        imputation=imputation,
        scaler_kind=opts.scaler,
        scaler_mean=tuple(float(v) for v in mean),
        scaler_scale=tuple(float(v) for v in scale),
        centroids=tuple(tuple(float(v) for v in c) for c in centroids),
        weights=tuple(float(w) for w in weights),
        segments=tuple(
            Segment(
                id=int(sid),
                name=str(names.loc[sid, "name"]),
                description=str(names.loc[sid, "description"]),
                action=str(names.loc[sid, "action"]),
                profile=prof[int(sid)],
            )
            for sid in ids
        ),
        algorithm=selector.algorithm_,
        created_at=created,
        as_of=as_of,
        half_life_days=opts.half_life_days,
        metrics=metrics,
        data_fingerprint=fingerprint,
        library_versions=_library_versions(),
        extra={
            stable_ids.HIGH_WATER_KEY: int(
                max([*ids, stable_ids.high_water(previous.model if previous else None)])
            )
        },
    )
    transition = None
    if previous is not None and previous.assignments is not None:
        transition = stable_ids.transition_matrix(
            previous.assignments,
            out["segment_id"],
            old_names={s.id: s.name for s in previous.model.segments},
            new_names={s.id: s.name for s in model.segments},
        )
    agreement = float((model.nearest(X) == labels).mean()) if len(X) <= 200_000 else None
    return FitResult(
        states=states,
        customers=out,
        features=features,
        X=X,
        labels=labels,
        model=model,
        cleaning=steps,
        kmeans_curve=selector.kmeans_curve_,
        knee_k=selector.knee_k_,
        comparison=selector.comparison_,
        selection_sentence=selector.selection_sentence_,
        weak_structure=selector.weak_structure_,
        weak_structure_message=selector.weak_structure_message_,
        silhouette_sample_size=selector.silhouette_sample_size_,
        nearest_centroid_agreement=selector.nearest_centroid_agreement_,
        profiles=profiles.join(names),
        separation=sep,
        tree_rules=rules,
        tree_agreement=tree_agreement,
        linkage=selector.linkage_,
        k_distance=selector.k_distance_,
        dbscan_eps=selector.dbscan_eps_,
        transition=transition,
        as_of=as_of,
        meta={
            **opts.meta,
            "seed": opts.seed,
            "scaler": opts.scaler,
            "outliers": opts.outliers,
            "k_range": list(selector.ks_),
            "algorithms": list(opts.algorithms),
            "dropped_constant_features": dropped,
            "selection_sample_size": selector.selection_sample_size_,
            "model_centroid_self_check": agreement,
            "timings": timings,
            "data_fingerprint": fingerprint,
        },
    )
