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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

from offline import clean, naming, stable_ids
from offline.result import CleaningStep, FitResult
from offline.selection import ALGORITHMS, SegmentSelector
from state.errors import ConfigError
from state.features import DEFAULT_HALF_LIFE_DAYS
from state.model import Segment, SegmentModel

logger = logging.getLogger(__name__)

LOG1P_FEATURES = frozenset(
    {"orders", "refunds", "gross", "refunded", "discount", "items", "net_spend",
     "avg_order_value", "spend_rate", "order_rate"}
)  # fmt: skip
TRANSACTION_DEFAULTS = (
    "recency_days", "orders", "net_spend", "avg_order_value", "tenure_days", "discount_share"
)  # fmt: skip
EVENT_COLUMNS = ("customer_id", "type", "ts", "amount", "discount", "items")
PROFILE_COLUMNS = ("age", "gender", "annual_income")


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


def customer_features(
    customers: pd.DataFrame | None,
    transactions: pd.DataFrame | None,
    as_of: float | None,
    half_life_days: float,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """One row per customer (index = customer id): derived features and customer columns.

    Returns ``(frame, states)``; ``states`` is the :func:`state.batch.batch_states` frame
    (None without transactions).
    """
    frame: pd.DataFrame | None = None
    states = None
    if transactions is not None:
        from state.batch import batch_states, derive_frame

        keep = (*EVENT_COLUMNS, *PROFILE_COLUMNS)  # profile attributes ride along on events
        tx = transactions[[c for c in keep if c in transactions.columns]]
        states = batch_states(tx, half_life_days=half_life_days)
        frame = derive_frame(states, as_of, half_life_days=half_life_days)
        frame = frame.drop(columns=[c for c in PROFILE_COLUMNS if frame[c].isna().all()])
    if customers is not None:
        cust = customers.set_index("customer_id")
        if frame is None:
            frame = cust
        else:
            ids = frame.index.union(cust.index, sort=False)
            frame = frame.reindex(ids)
            derived = [c for c in frame.columns if c not in PROFILE_COLUMNS]
            frame[derived] = frame[derived].fillna(0.0)  # no transactions: derive()'s zeros
            for col in cust.columns:
                joined = cust[col].reindex(ids)
                frame[col] = joined.combine_first(frame[col]) if col in frame else joined
    if frame is None:
        raise ConfigError("give --customers, --transactions or both")
    frame.index = frame.index.astype(str).rename("customer_id")
    return frame, states


def seed_states(
    states: pd.DataFrame | None, frame: pd.DataFrame, as_of: float | None
) -> pd.DataFrame:
    """Every customer's :class:`~state.features.CustomerState` fields for the publish seed.

    Customers without transactions get the empty state; profile fields (``age``,
    ``gender``, ``annual_income``) come from the customers table when it has them, with
    ``profile_ts`` = ``as_of`` (0 for customers-only data).
    """
    from state.batch import INT_FIELDS
    from state.features import STATE_FIELDS

    if states is None:
        states = pd.DataFrame(index=frame.index, columns=list(STATE_FIELDS), dtype=float)
    out = states.reindex(frame.index)
    for col in STATE_FIELDS:
        if col in INT_FIELDS:
            out[col] = out[col].fillna(0).astype("int64")
        elif col in ("spend_decayed", "orders_decayed"):
            out[col] = out[col].astype(float).fillna(0.0)
    out["gender"] = out["gender"].astype(object)
    known = pd.Series(False, index=frame.index)
    for col in PROFILE_COLUMNS:
        if col in frame.columns:
            if col == "gender":  # the cleaning's "unknown" is not a gender: leave it unknown
                values = frame[col].where(frame[col] != clean.UNKNOWN_TEXT)
            else:
                values = pd.to_numeric(frame[col], errors="coerce")
            out[col] = values.where(values.notna(), out[col])
            known |= values.notna()
    stamp = 0.0 if as_of is None else as_of
    out["profile_ts"] = (
        out["profile_ts"].astype(float).where(~known | out["profile_ts"].notna(), stamp)
    )
    return out[list(STATE_FIELDS)]


def default_features(
    frame: pd.DataFrame, customer_columns: Sequence[str], has_tx: bool
) -> list[str]:
    """Transaction defaults (RFM, order value, tenure, discount share), then the numeric
    columns of the customers table."""
    out = list(TRANSACTION_DEFAULTS) if has_tx else []
    for c in customer_columns:
        col = frame[c]
        if (
            c not in out
            and pd.api.types.is_numeric_dtype(col)
            and not pd.api.types.is_bool_dtype(col)
        ):
            out.append(c)
    return out


def model_space(
    frame: pd.DataFrame, features: Sequence[str], transforms: dict[str, str], scaler: str
) -> tuple[np.ndarray, np.ndarray, dict[str, float], np.ndarray, np.ndarray]:
    """Raw features -> (X scaled, X transformed, imputation, scaler mean, scaler scale)."""
    raw = frame[list(features)].to_numpy(dtype=float)
    Xt = raw.copy()
    for j, f in enumerate(features):
        if transforms.get(f) == "log1p":
            Xt[:, j] = np.log1p(np.maximum(raw[:, j], 0.0))
    imputation = {f: float(np.nanmedian(Xt[:, j])) for j, f in enumerate(features)}
    if scaler == "standard":
        mean, scale = Xt.mean(axis=0), Xt.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    elif scaler == "none":
        mean, scale = np.zeros(len(features)), np.ones(len(features))
    else:
        raise ConfigError(f"scaler must be 'standard' or 'none', got {scaler!r}")
    return (Xt - mean) / scale, Xt, imputation, mean, scale


def _library_versions() -> dict[str, str]:
    out = {}
    for lib in ("segstream", "scikit-learn", "numpy", "pandas", "scipy"):
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:  # pragma: no cover
            out[lib] = "unknown"
    return out


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
            if as_of is None and len(transactions):
                as_of = float(transactions["ts"].max())
    with _stage("features", timings, progress):
        frame, states = customer_features(customers, transactions, as_of, opts.half_life_days)
        states = seed_states(states, frame, as_of)
        has_tx, has_cust = transactions is not None, customers is not None
        cust_cols = [c for c in customers.columns if c != "customer_id"] if has_cust else []
        features = list(opts.features or default_features(frame, cust_cols, has_tx))
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
        transforms = {f: "log1p" for f in features if f in LOG1P_FEATURES}
        frame, s = clean.treat_outliers(frame, features, transforms, opts.outliers)
        steps += s
        X, Xt, imputation, mean, scale = model_space(frame, features, transforms, opts.scaler)
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
        category = _top_category(transactions, frame.index)
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
        "silhouette": float(chosen["silhouette"]),
        "davies_bouldin": float(chosen["davies_bouldin"]),
        "calinski_harabasz": float(chosen["calinski_harabasz"]),
        "stability": None if pd.isna(chosen["stability"]) else float(chosen["stability"]),
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


def _top_category(transactions: pd.DataFrame | None, index: pd.Index) -> pd.Series | None:
    """Each customer's most frequent purchase category (None when no categories are known)."""
    if (
        transactions is None
        or "category" not in transactions
        or transactions["category"].isna().all()
    ):
        return None
    tx = transactions.dropna(subset=["category"])
    top = tx.groupby(["customer_id", "category"], observed=True).size().reset_index(name="n")
    top = top.sort_values("n", ascending=False).drop_duplicates("customer_id")
    return top.set_index("customer_id")["category"].reindex(index)
