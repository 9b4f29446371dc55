"""The per-customer table of a fit: derived features (state/ rules), customer columns,
the publish seed states, default features and the model-space matrix.

Features of customers with transactions come from :func:`state.batch.batch_states` and
:func:`state.batch.derive_frame` at ``as_of``, never from a second implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from offline import clean
from state.errors import ConfigError

LOG1P_FEATURES = frozenset(
    {"orders", "refunds", "gross", "refunded", "discount", "items", "net_spend",
     "avg_order_value", "spend_rate", "order_rate"}
)  # fmt: skip
TRANSACTION_DEFAULTS = (
    "recency_days", "orders", "net_spend", "avg_order_value", "tenure_days", "discount_share"
)  # fmt: skip
EVENT_COLUMNS = ("customer_id", "type", "ts", "amount", "discount", "items")
PROFILE_COLUMNS = ("age", "gender", "annual_income")


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
        if as_of is None:
            raise ConfigError("transactions need a snapshot time as_of")
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


def top_category(transactions: pd.DataFrame | None, index: pd.Index) -> pd.Series | None:
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
