"""The state of every customer at once: the rules of :mod:`state.features`, vectorised.

Not a second opinion: every rule uses the helpers of :mod:`state.features`
(:func:`~state.features.cents_array`, :func:`~state.features.decay_factor`,
:func:`~state.features.safe_ratio`, :func:`~state.features.days_between`,
:func:`~state.features.bring_forward`, the order of
:func:`~state.features.profile_key`), and ``tests/unit/test_batch_equivalence.py``
proves the result equals folding :func:`~state.features.apply_event` over the
same events. Unordered scatter-reductions (``np.add.at``, ``np.maximum.at``) need
no sort, which keeps 20 million events well under a minute on two cores.

>>> import pandas as pd
>>> events = pd.DataFrame({
...     "customer_id": ["a", "b", "a", "a"],
...     "type": ["purchase", "purchase", "refund", "purchase"],
...     "ts": [0.0, 5.0, 86_400.0, 86_400.0],
...     "amount": [10.0, 3.0, 4.0, 6.0],
... })
>>> states = batch_states(events, half_life_days=1.0)
>>> a = state_from_row(states.loc["a"])
>>> a.orders, a.refunds, a.gross_cents, a.refunded_cents, a.spend_decayed, a.decay_ts
(2, 1, 1600, 400, 700.0, 86400.0)
>>> float(derive_frame(states, 86_400.0, half_life_days=1.0).loc["a", "net_spend"])
12.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from state.features import (
    DEFAULT_HALF_LIFE_DAYS,
    FEATURE_NAMES,
    STATE_FIELDS,
    CustomerState,
    bring_forward,
    cents_array,
    days_between,
    decay_factor,
    money,
    safe_ratio,
)

INT_FIELDS: frozenset[str] = frozenset(
    {"orders", "refunds", "gross_cents", "refunded_cents", "discount_cents", "items"}
)
STR_FIELDS: frozenset[str] = frozenset({"gender"})
INDEX_NAME = "customer_id"


# -- batch state ---------------------------------------------------------------------------------


def batch_states(
    events: pd.DataFrame, *, half_life_days: float = DEFAULT_HALF_LIFE_DAYS
) -> pd.DataFrame:
    """One row of :class:`~state.features.CustomerState` fields per customer.

    ``events`` has the event contract's column names: ``customer_id``, ``ts`` (epoch
    seconds), ``amount``, and optionally ``type`` (``"purchase"`` or ``"refund"``),
    ``discount``, ``items``, ``age``, ``gender``, ``annual_income``. A missing column
    or value takes the contract's default (purchase, discount 0, items 1, profile
    unknown); a missing ``customer_id``, ``ts`` or ``amount`` or an unknown ``type``
    raises ``ValueError``. Rows are in arrival order (only profile ties could care,
    and they do not: see :func:`~state.features.profile_key`).

    The result is indexed by ``customer_id``
    (as ``str``, like the event contract's ids) in order of first appearance (category
    order for a categorical column); unknown values are ``NaN`` (``None`` for ``gender``).
    """
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days!r}")
    codes, uniques = _customer_codes(events["customer_id"])
    k = len(uniques)
    n = len(events)
    ts = events["ts"].to_numpy(dtype=np.float64)
    if n and not np.isfinite(ts).all():
        raise ValueError("ts must be finite")
    refund = _is_refund(events, n)
    purchase = ~refund
    amount = cents_array(events["amount"].to_numpy(dtype=np.float64))
    # Missing optional values take the contract's defaults: discount 0, items 1.
    discount = cents_array(_fill(_float_column(events, "discount", n), 0.0))
    items = _fill(_float_column(events, "items", n), 1.0).astype(np.int64)

    pc = codes[purchase]
    rc = codes[refund]
    orders = np.bincount(pc, minlength=k).astype(np.int64)
    refunds = np.bincount(rc, minlength=k).astype(np.int64)
    gross = _sum_int(pc, amount[purchase], k)
    refunded = _sum_int(rc, amount[refund], k)
    discount_sum = _sum_int(pc, discount[purchase], k)
    items_sum = _sum_int(pc, items[purchase], k)

    first_ts = np.full(k, np.inf)
    np.minimum.at(first_ts, pc, ts[purchase])
    last_ts = np.full(k, -np.inf)
    np.maximum.at(last_ts, pc, ts[purchase])
    first_ts[orders == 0] = np.nan
    last_ts[orders == 0] = np.nan

    # decayed sums valued at decay_ts = the latest event time: sum of v * 2^(-(decay_ts - t)/H)
    decay_ts = np.full(k, -np.inf)
    np.maximum.at(decay_ts, codes, ts)
    weight = decay_factor(decay_ts[codes] - ts, half_life_days)
    signed = np.where(refund, -amount, amount).astype(np.float64)
    # (astype: bincount of nothing returns int64 even with float weights)
    spend_decayed = np.bincount(codes, weights=signed * weight, minlength=k).astype(np.float64)
    orders_decayed = np.bincount(pc, weights=weight[purchase], minlength=k).astype(np.float64)
    decay_ts[~np.isfinite(decay_ts)] = np.nan

    age, gender, income, profile_ts = _profiles(events, codes, ts, k)

    frame = pd.DataFrame(
        {
            "orders": orders,
            "refunds": refunds,
            "gross_cents": gross,
            "refunded_cents": refunded,
            "discount_cents": discount_sum,
            "items": items_sum,
            "first_ts": first_ts,
            "last_ts": last_ts,
            "spend_decayed": spend_decayed,
            "orders_decayed": orders_decayed,
            "decay_ts": decay_ts,
            "age": age,
            "gender": gender,
            "annual_income": income,
            "profile_ts": profile_ts,
        },
        index=pd.Index(uniques, name=INDEX_NAME, dtype=object).astype(str).astype(object),
    )
    return frame[list(STATE_FIELDS)]


def _customer_codes(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense int codes of the customer column and the id of each code."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy().astype(np.intp)
        uniques = np.asarray(column.cat.categories, dtype=object)
        if len(codes) and codes.min() >= 0:
            present = np.bincount(codes, minlength=len(uniques)) > 0
            if not present.all():  # drop unused categories without sorting 20M codes
                remap = np.cumsum(present) - 1
                codes, uniques = remap[codes], uniques[present]
    else:
        codes, uniques_idx = pd.factorize(column, sort=False)
        uniques = np.asarray(uniques_idx, dtype=object)
    if len(codes) and codes.min() < 0:
        raise ValueError("customer_id must not be missing")
    return codes, uniques


def _is_refund(events: pd.DataFrame, n: int) -> np.ndarray:
    """``type == "refund"``; a missing type is a purchase (the contract's default)."""
    if "type" not in events:
        return np.zeros(n, dtype=bool)
    col = events["type"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        cats = np.asarray(col.cat.categories, dtype=object)
        _check_types(cats[np.bincount(codes[codes >= 0], minlength=len(cats)) > 0])
    else:  # one hashing pass, a handful of distinct values
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        cats = np.asarray(uniques, dtype=object)
        _check_types(cats)
    return np.append(cats == "refund", False)[codes]  # code -1 (missing): purchase


def _check_types(values: np.ndarray) -> None:
    bad = sorted({str(v) for v in values if not pd.isna(v)} - {"purchase", "refund"})
    if bad:
        raise ValueError(f"type must be 'purchase' or 'refund', got {bad[:5]}")


def _sum_int(codes: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Exact per-customer sums of integers (int64, any order)."""
    out = np.zeros(k, dtype=np.int64)
    np.add.at(out, codes, values.astype(np.int64, copy=False))
    return out


def _fill(values: np.ndarray, default: float) -> np.ndarray:
    return np.where(np.isnan(values), default, values)


def _float_column(events: pd.DataFrame, name: str, n: int) -> np.ndarray:
    if name not in events:
        return np.full(n, np.nan)
    return pd.to_numeric(events[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)


def _gender_known(events: pd.DataFrame, n: int) -> np.ndarray:
    if "gender" not in events:
        return np.zeros(n, dtype=bool)
    return events["gender"].notna().to_numpy(dtype=bool)


def _gender_at(events: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Gender of ``rows`` (known ones) as ``str``; only these rows become Python objects."""
    values = events["gender"].iloc[rows].to_numpy(dtype=object)
    return np.array([v if isinstance(v, str) else str(v) for v in values], dtype=object)


def _profiles(
    events: pd.DataFrame, codes: np.ndarray, ts: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The profile of the event with the greatest :func:`~state.features.profile_key`."""
    n = len(codes)
    age = np.full(k, np.nan)
    income = np.full(k, np.nan)
    gender = np.full(k, None, dtype=object)
    profile_ts = np.full(k, np.nan)
    if not any(c in events for c in ("age", "gender", "annual_income")):
        return age, gender, income, profile_ts
    e_age = _float_column(events, "age", n)
    e_income = _float_column(events, "annual_income", n)
    gender_known = _gender_known(events, n)
    has = ~np.isnan(e_age) | gender_known | ~np.isnan(e_income)
    if not has.any():
        return age, gender, income, profile_ts
    # Candidates: the profile-carrying events at each customer's latest profile time.
    rows = np.flatnonzero(has)
    best_ts = np.full(k, -np.inf)
    np.maximum.at(best_ts, codes[rows], ts[rows])
    rows = rows[ts[rows] == best_ts[codes[rows]]]
    # Ties at that time: the greatest (age, gender, income) key wins, as in profile_key().
    c_age, c_income = e_age[rows], e_income[rows]
    g_codes = np.full(len(rows), -1, dtype=np.int64)
    c_gender = np.full(len(rows), None, dtype=object)
    c_known = gender_known[rows]
    if c_known.any():  # codes in Python's string order, as profile_key compares
        c_gender[c_known] = _gender_at(events, rows[c_known])
        g_codes[c_known] = pd.factorize(c_gender[c_known], sort=True)[0]
    a_known, i_known = ~np.isnan(c_age), ~np.isnan(c_income)
    order = np.lexsort(
        (
            np.where(i_known, c_income, 0.0),
            i_known,
            g_codes,
            np.where(a_known, c_age, 0.0),
            a_known,
            codes[rows],
        )
    )
    c_sorted = codes[rows][order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = c_sorted[1:] != c_sorted[:-1]
    win_c = order[last]  # index into the candidates
    win = rows[win_c]
    cw = codes[win]
    age[cw] = e_age[win]
    income[cw] = e_income[win]
    gender[cw] = c_gender[win_c]
    profile_ts[cw] = ts[win]
    return age, gender, income, profile_ts


# -- derived features, vectorised ----------------------------------------------------------------


def derive_frame(
    states: pd.DataFrame,
    at: float | np.ndarray,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> pd.DataFrame:
    """:func:`~state.features.derive` for every row of ``states`` at time ``at``.

    ``at`` is one time or one per row. Columns: :data:`~state.features.FEATURE_NAMES`
    then ``gender``; an unknown ``age``/``annual_income`` is ``NaN`` here (``None`` in
    ``derive``). Nothing else is ever NaN.
    """
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days!r}")
    at_a = np.broadcast_to(np.asarray(at, dtype=np.float64), (len(states),))
    orders = states["orders"].to_numpy(dtype=np.float64)
    gross_c = states["gross_cents"].to_numpy(dtype=np.int64)
    refunded_c = states["refunded_cents"].to_numpy(dtype=np.int64)
    discount_c = states["discount_cents"].to_numpy(dtype=np.int64)
    gross, discount = money(gross_c), money(discount_c)
    first_ts = states["first_ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    last_ts = states["last_ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    decay_ts = states["decay_ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    has_orders = (orders > 0) & ~np.isnan(first_ts) & ~np.isnan(last_ts)
    gender = states["gender"].to_numpy(dtype=object)
    out = pd.DataFrame(
        {
            "orders": orders,
            "refunds": states["refunds"].to_numpy(dtype=np.float64),
            "gross": gross,
            "refunded": money(refunded_c),
            "discount": discount,
            "items": states["items"].to_numpy(dtype=np.float64),
            "net_spend": money(gross_c - refunded_c),
            "avg_order_value": safe_ratio(gross, orders),
            "discount_share": safe_ratio(discount, gross + discount),
            "recency_days": np.where(has_orders, days_between(at_a, last_ts), 0.0),
            "tenure_days": np.where(has_orders, days_between(at_a, first_ts), 0.0),
            "spend_rate": money(
                bring_forward(
                    states["spend_decayed"].to_numpy(dtype=np.float64),
                    decay_ts,
                    at_a,
                    half_life_days,
                )
            ),
            "order_rate": bring_forward(
                states["orders_decayed"].to_numpy(dtype=np.float64),
                decay_ts,
                at_a,
                half_life_days,
            ),
            "age": states["age"].to_numpy(dtype=np.float64, na_value=np.nan),
            "annual_income": states["annual_income"].to_numpy(dtype=np.float64, na_value=np.nan),
            "gender": np.where(pd.isna(gender), None, gender),
        },
        index=states.index,
    )
    return out[[*FEATURE_NAMES, "gender"]]


# -- converters between the forms ----------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def state_from_row(row: Mapping[str, Any] | pd.Series) -> CustomerState:
    """A :class:`~state.features.CustomerState` from a frame row or a mapping.

    Values may be numbers, numpy scalars or strings (as read from a Redis hash);
    missing fields, ``None``, ``NaN`` and ``""`` mean unknown.

    >>> state_from_row({"orders": "3", "gross_cents": 1250, "first_ts": float("nan")})
    CustomerState(orders=3, refunds=0, gross_cents=1250, refunded_cents=0, discount_cents=0, items=0, first_ts=None, last_ts=None, spend_decayed=0.0, orders_decayed=0.0, decay_ts=None, age=None, gender=None, annual_income=None, profile_ts=None)
    """
    values: dict[str, Any] = {}
    for name in STATE_FIELDS:
        if name not in row:
            continue
        v = row[name]
        if isinstance(v, bytes):
            v = v.decode()
        if _missing(v):
            if name in INT_FIELDS or name in ("spend_decayed", "orders_decayed"):
                continue  # the field's default (0)
            values[name] = None
        elif name in INT_FIELDS:
            values[name] = int(v)
        elif name in STR_FIELDS:
            values[name] = str(v)
        else:
            values[name] = float(v)
    return CustomerState(**values)


def state_to_row(state: CustomerState) -> dict[str, Any]:
    """The fields of ``state`` as a plain dict (``None`` for unknown).

    >>> state_to_row(CustomerState(orders=1))["orders"]
    1
    """
    return {name: getattr(state, name) for name in STATE_FIELDS}


def states_to_frame(
    states: Mapping[str, CustomerState] | Iterable[tuple[str, CustomerState]],
) -> pd.DataFrame:
    """Many states -> the frame form of :func:`batch_states` (same columns and dtypes).

    >>> states_to_frame({"a": CustomerState(orders=2)}).loc["a", "orders"]
    np.int64(2)
    """
    pairs = list(states.items()) if isinstance(states, Mapping) else list(states)
    ids = [cid for cid, _ in pairs]
    columns: dict[str, Any] = {}
    for name in STATE_FIELDS:
        col = [getattr(s, name) for _, s in pairs]
        if name in INT_FIELDS:
            columns[name] = np.array(col, dtype=np.int64)
        elif name in STR_FIELDS:
            columns[name] = np.array(col, dtype=object)
        else:
            columns[name] = np.array([math.nan if v is None else v for v in col], dtype=np.float64)
    return pd.DataFrame(columns, index=pd.Index(ids, name=INDEX_NAME, dtype=object))


def iter_states(frame: pd.DataFrame) -> Iterator[tuple[str, CustomerState]]:
    """``(customer_id, state)`` for every row of a state frame.

    >>> [cid for cid, _ in iter_states(states_to_frame({"a": CustomerState()}))]
    ['a']
    """
    cols = list(STATE_FIELDS)
    for cid, *values in frame[cols].itertuples(index=True, name=None):
        yield str(cid), state_from_row(dict(zip(cols, values, strict=True)))
