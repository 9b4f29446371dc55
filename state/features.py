"""Per-customer state and its pure update rules: the one definition of every feature.

Money is kept in integer cents so that sums are exact in any order. The rules are
written once here; :mod:`state.batch` computes the same state for many customers at
once with the same helpers (:func:`cents`, :func:`decay_factor`, :func:`profile_key`,
:func:`safe_ratio`, :func:`days_between`). See ``docs/features.md`` for the contract.

>>> from producer.contract import CheckoutEvent
>>> day = 86_400.0
>>> s = CustomerState()
>>> s = apply_event(s, CheckoutEvent(event_id="e1", customer_id="c1", ts=0.0, amount=40.0))
>>> s = apply_event(
...     s, CheckoutEvent(event_id="e2", customer_id="c1", ts=30 * day, amount=20.0, discount=5.0)
... )
>>> s.orders, s.gross_cents, s.discount_cents
(2, 6000, 500)
>>> f = derive(s, 30 * day)
>>> f["avg_order_value"], f["spend_rate"], f["recency_days"], f["tenure_days"]
(30.0, 40.0, 0.0, 30.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from producer.contract import CheckoutEvent

DEFAULT_HALF_LIFE_DAYS = 30.0
SECONDS_PER_DAY = 86_400.0
CENTS_PER_UNIT = 100

# cents(): |amount| * 100 + 0.5, floored, sign restored. The extra 1e-6 cent judges ties on
# the decimal value the producer meant (1.005 -> 101 although 1.005 * 100 == 100.4999...).
_ROUND_OFFSET = 0.500001

#: Derived, numeric features available to models (in this order). ``derive`` also returns
#: ``gender`` (a string or ``None``), which is not numeric and so not listed here.
FEATURE_NAMES: tuple[str, ...] = (
    "orders",
    "refunds",
    "gross",
    "refunded",
    "discount",
    "items",
    "net_spend",
    "avg_order_value",
    "discount_share",
    "recency_days",
    "tenure_days",
    "spend_rate",
    "order_rate",
    "age",
    "annual_income",
)
#: Profile attributes, carried from events (or the offline customer table) as they are.
PROFILE_NAMES: tuple[str, ...] = ("age", "gender", "annual_income")

#: A derived value: a float, ``None`` for an unknown profile value, ``str`` for ``gender``.
FeatureValue = float | str | None

_A = TypeVar("_A", float, np.ndarray)


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerState:
    """Exact running values for one customer (contract v1, see docs/features.md).

    Counts and ``*_cents`` fields are integers (exact in any order). ``spend_decayed``
    is in cents (float), ``orders_decayed`` in orders; both are valued at ``decay_ts``.
    """

    orders: int = 0
    refunds: int = 0
    gross_cents: int = 0
    refunded_cents: int = 0
    discount_cents: int = 0
    items: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    spend_decayed: float = 0.0
    orders_decayed: float = 0.0
    decay_ts: float | None = None
    age: float | None = None
    gender: str | None = None
    annual_income: float | None = None
    profile_ts: float | None = None


#: The state's field names, in order (the columns of :func:`state.batch.batch_states`).
STATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CustomerState))


# -- the shared rule helpers (scalar and vectorised) ----------------------------------------------


def cents(amount: float) -> int:
    """Money -> integer cents, rounding half away from zero (on the decimal value).

    Used wherever money enters the state; :mod:`state.batch` applies the same
    float operations to whole columns, so both give the same integers.

    >>> cents(19.99), cents(0.125), cents(-0.125), cents(1.005), cents(0.0)
    (1999, 13, -13, 101, 0)
    >>> cents(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: money must be finite, got nan
    """
    if not math.isfinite(amount):
        raise ValueError(f"money must be finite, got {amount!r}")
    n = math.floor(abs(amount) * CENTS_PER_UNIT + _ROUND_OFFSET)
    return -n if amount < 0 else n


def cents_array(amounts: np.ndarray) -> np.ndarray:
    """:func:`cents` for a whole column (same float operations), as ``int64``.

    >>> cents_array(np.array([19.99, 0.125, -0.125, 1.005])).tolist()
    [1999, 13, -13, 101]
    """
    a = np.asarray(amounts, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("money must be finite")
    n = np.floor(np.abs(a) * CENTS_PER_UNIT + _ROUND_OFFSET).astype(np.int64)
    return np.where(a < 0, -n, n)


def money(value_cents: float) -> float:
    """Cents -> money units (what every derived feature is expressed in).

    >>> money(1999)
    19.99
    """
    return value_cents / CENTS_PER_UNIT


def decay_factor(dt_seconds: _A, half_life_days: float) -> _A:
    """``2 ** (-dt / H)``: the weight after ``dt_seconds`` with half-life ``H`` days.

    Works on a float or a numpy array (the one formula for stream and batch).

    >>> decay_factor(30 * 86_400.0, 30.0)
    0.5
    >>> decay_factor(np.array([0.0, 86_400.0]), 1.0).tolist()
    [1.0, 0.5]
    """
    return 2.0 ** (-dt_seconds / (half_life_days * SECONDS_PER_DAY))


def fold_decayed(
    value: float, value_ts: float | None, v: float, t: float, half_life_days: float
) -> tuple[float, float]:
    """Add ``v`` at time ``t`` to a decayed sum ``value`` valued at ``value_ts``.

    Returns ``(new_value, new_value_ts)``, valued at ``max(value_ts, t)``: a newer
    event decays the old sum forward; an older one is decayed before it is added.

    >>> fold_decayed(100.0, 0.0, 10.0, 86_400.0, 1.0)
    (60.0, 86400.0)
    >>> fold_decayed(100.0, 86_400.0, 10.0, 0.0, 1.0)
    (105.0, 86400.0)
    """
    if value_ts is None:
        return value + v, t
    if t >= value_ts:
        return value * decay_factor(t - value_ts, half_life_days) + v, t
    return value + v * decay_factor(value_ts - t, half_life_days), value_ts


def bring_forward(value: _A, value_ts: _A | None, at: _A | float, half_life_days: float) -> _A:
    """A decayed sum valued at ``value_ts``, seen at time ``at`` (scalar or arrays).

    Only forward: for ``at`` before ``value_ts`` the value at ``value_ts`` is returned
    (clamped, never inflated backwards; see docs/features.md). An unknown ``value_ts``
    (``None``, or ``NaN`` in an array) leaves the value as it is.

    >>> bring_forward(8.0, 0.0, 3 * 86_400.0, 1.0), bring_forward(8.0, 10.0, 0.0, 1.0)
    (1.0, 8.0)
    >>> bring_forward(np.array([8.0, 8.0]), np.array([0.0, np.nan]), 86_400.0, 1.0).tolist()
    [4.0, 8.0]
    """
    if isinstance(value, np.ndarray):
        dt = np.fmax(np.asarray(at, dtype=np.float64) - np.asarray(value_ts), 0.0)
        return value * decay_factor(dt, half_life_days)
    if value_ts is None or at <= value_ts:
        return value
    return value * decay_factor(at - value_ts, half_life_days)


def profile_key(
    ts: float, age: float | None, gender: str | None, annual_income: float | None
) -> tuple[float, bool, float, bool, str, bool, float]:
    """Order of profile updates: the latest ``ts`` wins; equal ``ts`` are broken by the
    values themselves (unknown < known, then smaller < larger), so the winner does not
    depend on arrival order.

    >>> profile_key(5.0, 30.0, None, None) < profile_key(5.0, 31.0, None, None)
    True
    """
    return (
        ts,
        age is not None,
        0.0 if age is None else age,
        gender is not None,
        "" if gender is None else gender,
        annual_income is not None,
        0.0 if annual_income is None else annual_income,
    )


def safe_ratio(num: _A, den: _A) -> _A:
    """``num / den``, and 0 where ``den`` is 0 (scalar or array).

    >>> safe_ratio(6.0, 3.0), safe_ratio(6.0, 0.0)
    (2.0, 0.0)
    >>> safe_ratio(np.array([6.0, 6.0]), np.array([3.0, 0.0])).tolist()
    [2.0, 0.0]
    """
    if isinstance(num, np.ndarray) or isinstance(den, np.ndarray):
        num_a = np.asarray(num, dtype=np.float64)
        den_a = np.asarray(den, dtype=np.float64)
        out = np.zeros(np.broadcast(num_a, den_a).shape)
        np.divide(num_a, den_a, out=out, where=den_a != 0)
        return out
    return num / den if den != 0 else 0.0


def days_between(at: _A, ts: _A) -> _A:
    """``(at - ts)`` in days, never negative (``at`` before ``ts`` gives 0).

    >>> days_between(2 * 86_400.0, 86_400.0), days_between(0.0, 86_400.0)
    (1.0, 0.0)
    """
    if isinstance(at, np.ndarray) or isinstance(ts, np.ndarray):
        return np.maximum((at - ts) / SECONDS_PER_DAY, 0.0)
    return max((at - ts) / SECONDS_PER_DAY, 0.0)


def _opt_float(value: float | None) -> float | None:
    """A known profile number as float; ``None`` and ``NaN`` are unknown."""
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) else f


def _check_half_life(half_life_days: float) -> None:
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days!r}")


# -- the update rule ----------------------------------------------------------------------------


class _Running:
    """A customer's state while events are folded into it: mutable, never leaves this module.

    :func:`_apply` is the one update rule; :func:`apply_event` and :func:`fold_events`
    both run it, the latter without building a frozen state per event.
    """

    __slots__ = STATE_FIELDS

    def __init__(self, s: CustomerState) -> None:
        self.orders, self.refunds = s.orders, s.refunds
        self.gross_cents, self.refunded_cents = s.gross_cents, s.refunded_cents
        self.discount_cents, self.items = s.discount_cents, s.items
        self.first_ts, self.last_ts = s.first_ts, s.last_ts
        self.spend_decayed, self.orders_decayed = s.spend_decayed, s.orders_decayed
        self.decay_ts = s.decay_ts
        self.age, self.gender, self.annual_income = s.age, s.gender, s.annual_income
        self.profile_ts = s.profile_ts

    def freeze(self) -> CustomerState:
        return CustomerState(
            orders=self.orders,
            refunds=self.refunds,
            gross_cents=self.gross_cents,
            refunded_cents=self.refunded_cents,
            discount_cents=self.discount_cents,
            items=self.items,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            spend_decayed=self.spend_decayed,
            orders_decayed=self.orders_decayed,
            decay_ts=self.decay_ts,
            age=self.age,
            gender=self.gender,
            annual_income=self.annual_income,
            profile_ts=self.profile_ts,
        )


def _apply(r: _Running, event: CheckoutEvent, half_life_days: float) -> None:
    """The update rule: fold ``event`` into ``r`` (see :func:`apply_event`)."""
    t = float(event.ts)
    amount = cents(event.amount)
    decay_ts = r.decay_ts
    if event.type != "refund":
        r.orders += 1
        r.gross_cents += amount
        if event.discount:
            r.discount_cents += cents(event.discount)
        r.items += int(event.items)
        first_ts, last_ts = r.first_ts, r.last_ts
        r.first_ts = t if first_ts is None or t < first_ts else first_ts
        r.last_ts = t if last_ts is None or t > last_ts else last_ts
        r.spend_decayed, r.decay_ts = fold_decayed(
            r.spend_decayed, decay_ts, float(amount), t, half_life_days
        )
        r.orders_decayed, _ = fold_decayed(r.orders_decayed, decay_ts, 1.0, t, half_life_days)
    else:
        r.refunds += 1
        r.refunded_cents += amount
        r.spend_decayed, r.decay_ts = fold_decayed(
            r.spend_decayed, decay_ts, float(-amount), t, half_life_days
        )
        r.orders_decayed, _ = fold_decayed(r.orders_decayed, decay_ts, 0.0, t, half_life_days)

    e_age, e_gender, e_income = event.age, event.gender, event.annual_income
    if e_age is None and e_gender is None and e_income is None:
        return  # no profile in the event (the common case)
    e_age = _opt_float(e_age)
    e_gender = None if e_gender is None else str(e_gender)
    e_income = _opt_float(e_income)
    if (e_age is not None or e_gender is not None or e_income is not None) and (
        r.profile_ts is None
        or profile_key(t, e_age, e_gender, e_income)
        > profile_key(r.profile_ts, r.age, r.gender, r.annual_income)
    ):
        r.age, r.gender, r.annual_income, r.profile_ts = e_age, e_gender, e_income, t


def apply_event(
    state: CustomerState,
    event: CheckoutEvent,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> CustomerState:
    """The state after ``event``: pure, returns a new state (``state`` is not touched).

    The result does not depend on the order events arrive in (decayed values up to
    float rounding). A refund adds to ``refunds``/``refunded_cents``, subtracts its
    amount from ``spend_decayed`` and leaves everything else but ``decay_ts``.

    >>> from producer.contract import CheckoutEvent
    >>> s = apply_event(CustomerState(), CheckoutEvent(
    ...     event_id="e1", customer_id="c1", ts=100.0, amount=12.5, items=3, age=41.0))
    >>> s.orders, s.gross_cents, s.items, s.first_ts, s.spend_decayed, s.age
    (1, 1250, 3, 100.0, 1250.0, 41.0)
    >>> r = apply_event(s, CheckoutEvent(
    ...     event_id="e2", customer_id="c1", ts=100.0, amount=2.5, type="refund"))
    >>> r.orders, r.refunds, r.refunded_cents, r.spend_decayed, r.orders_decayed
    (1, 1, 250, 1000.0, 1.0)
    """
    _check_half_life(half_life_days)
    running = _Running(state)
    _apply(running, event, half_life_days)
    return running.freeze()


def fold_events(
    events: Iterable[CheckoutEvent],
    state: CustomerState | None = None,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> CustomerState:
    """:func:`apply_event` over ``events`` in the given order (one customer's events).

    The same rule, run on one mutable copy: one frozen state at the end instead of one
    per event (what the consumer folds a batch with; equal to the ``apply_event`` fold,
    tested).

    >>> from producer.contract import CheckoutEvent
    >>> evs = [CheckoutEvent(event_id=str(i), customer_id="c", ts=float(i), amount=1.0)
    ...        for i in range(3)]
    >>> fold_events(evs).orders
    3
    """
    _check_half_life(half_life_days)
    running = _Running(CustomerState() if state is None else state)
    for e in events:
        _apply(running, e, half_life_days)
    return running.freeze()


# -- derived features ---------------------------------------------------------------------------


def derive(
    state: CustomerState,
    at: float,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> dict[str, FeatureValue]:
    """Derived features of ``state`` at time ``at`` (epoch seconds), money in units.

    Every name of :data:`FEATURE_NAMES` plus ``gender``. Never NaN: customers without
    purchases get ``avg_order_value = discount_share = recency_days = tenure_days = 0``;
    unknown profile values are ``None``.

    >>> f = derive(CustomerState(), 1e9)
    >>> [f[k] for k in ("orders", "avg_order_value", "recency_days", "spend_rate", "age")]
    [0.0, 0.0, 0.0, 0.0, None]
    >>> s = CustomerState(orders=2, gross_cents=5000, discount_cents=0, first_ts=0.0,
    ...                   last_ts=0.0, spend_decayed=5000.0, orders_decayed=2.0, decay_ts=0.0)
    >>> f = derive(s, 30 * 86_400.0, half_life_days=30.0)
    >>> f["spend_rate"], f["order_rate"], f["recency_days"], f["net_spend"]
    (25.0, 1.0, 30.0, 50.0)
    """
    _check_half_life(half_life_days)
    gross = money(state.gross_cents)
    discount = money(state.discount_cents)
    first_ts, last_ts = state.first_ts, state.last_ts
    recency = tenure = 0.0  # no purchase yet: see docs/features.md
    if state.orders > 0 and first_ts is not None and last_ts is not None:
        recency, tenure = days_between(at, last_ts), days_between(at, first_ts)
    return {
        "orders": float(state.orders),
        "refunds": float(state.refunds),
        "gross": gross,
        "refunded": money(state.refunded_cents),
        "discount": discount,
        "items": float(state.items),
        "net_spend": money(state.gross_cents - state.refunded_cents),
        "avg_order_value": safe_ratio(gross, float(state.orders)),
        "discount_share": safe_ratio(discount, gross + discount),
        "recency_days": recency,
        "tenure_days": tenure,
        "spend_rate": money(bring_forward(state.spend_decayed, state.decay_ts, at, half_life_days)),
        "order_rate": bring_forward(state.orders_decayed, state.decay_ts, at, half_life_days),
        "age": state.age,
        "annual_income": state.annual_income,
        "gender": state.gender,
    }
