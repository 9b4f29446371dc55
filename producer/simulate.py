"""A realistic checkout-traffic simulator: a population, its history, and its live stream.

Everything is vectorised with numpy and deterministic under ``seed``: the same
arguments give the same population, the same history and the same stream.

>>> pop = make_population(60, seed=7, end=1_750_000_000.0)
>>> history = simulate_history(pop, seed=7)
>>> list(history.columns) == list(HISTORY_COLUMNS)
True
>>> history["customer_id"].nunique()
60
>>> events = list(simulate_stream(pop, seed=7, events=5))
>>> [e.ts >= pop.end for e in events]
[True, True, True, True, True]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from producer.archetypes import (
    ARCHETYPE_NAMES,
    ARCHETYPES,
    CATEGORIES,
    CHANNELS,
    GENDERS,
    promo_day_share,
    promo_days_mask,
)
from producer.contract import TABLE_COLUMNS, CheckoutEvent

DAY = 86_400.0
YEAR = 365.0 * DAY
HISTORY_COLUMNS: tuple[str, ...] = tuple(c for c in TABLE_COLUMNS if c != "currency")
CHUNK_CUSTOMERS = 20_000  # history is generated per chunk of customers (bounded memory)
STREAM_BLOCK = 4_096  # stream candidates are drawn per block

Progress = Callable[[int], None]


def _attr(name: str) -> np.ndarray:
    return np.array([getattr(a, name) for a in ARCHETYPES], dtype=float)


@dataclass(frozen=True, eq=False)
class Population:
    """A simulated customer population: one row per customer, in numpy arrays.

    Times are epoch seconds; ``end`` is where the history ends and the stream
    starts. Rates are orders per second. ``promo_mult``/``off_mult`` scale a
    customer's rate on promotion days and on other days.
    """

    end: float
    history_days: float
    customer_id: np.ndarray
    archetype: np.ndarray
    joined: np.ndarray
    quiet_from: np.ndarray
    rate: np.ndarray
    quiet_rate: np.ndarray
    regularity: np.ndarray
    value_mu: np.ndarray
    value_sigma: np.ndarray
    promo_mult: np.ndarray
    off_mult: np.ndarray
    discount_on: np.ndarray
    discount_off: np.ndarray
    discount_depth: np.ndarray
    refund_rate: np.ndarray
    items_mean: np.ndarray
    category_cum: np.ndarray
    channel_cum: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    annual_income: np.ndarray

    def __len__(self) -> int:
        return len(self.customer_id)

    def truth(self) -> pd.DataFrame:
        """Each customer's archetype: columns ``customer_id, archetype``."""
        names = np.array(ARCHETYPE_NAMES, dtype=object)
        return pd.DataFrame({"customer_id": self.customer_id, "archetype": names[self.archetype]})


def make_population(
    customers: int, *, seed: int = 0, end: float | None = None, history_days: float = 365.0
) -> Population:
    """Draw ``customers`` customers from the archetypes (their shares are the weights)."""
    if customers < 1:
        raise ValueError("customers must be >= 1")
    if history_days < 7:
        raise ValueError("history_days must be >= 7")
    end = float(time.time()) if end is None else float(end)
    rng = np.random.default_rng([seed, 0])
    n = customers
    weights = _attr("weight")
    arch = rng.choice(len(ARCHETYPES), size=n, p=weights / weights.sum())
    window = history_days * DAY

    lo = np.array([a.joined_between[0] for a in ARCHETYPES])[arch]
    hi = np.array([a.joined_between[1] for a in ARCHETYPES])[arch]
    joined = end - window * rng.uniform(lo, hi) - rng.uniform(0, DAY, n)
    joined = np.minimum(joined, end - 3600.0)
    quiet = np.array([a.quiet_since or (0.0, 0.0) for a in ARCHETYPES])[arch]
    quiet_from = np.where(
        quiet[:, 1] > 0, end - window * rng.uniform(quiet[:, 0], quiet[:, 1]), np.inf
    )
    quiet_from = np.maximum(quiet_from, joined)

    # Personal rates and order values scatter around the archetype's.
    rate = _attr("orders_per_year")[arch] * rng.lognormal(0.0, 0.2, n) / YEAR
    quiet_rate = _attr("quiet_orders_per_year")[arch] / YEAR
    value_mu = np.log(_attr("median_order_value")[arch]) + rng.normal(
        0.0, _attr("customer_spread")[arch]
    )
    share = promo_day_share()
    promo = _attr("promo_share")[arch]

    alphas = np.array([a.category_alpha for a in ARCHETYPES])[arch]
    cats = rng.gamma(alphas)
    cats /= cats.sum(axis=1, keepdims=True)
    chans = np.array([a.channel_p for a in ARCHETYPES])[arch]

    age = np.clip(np.rint(rng.normal(_attr("age_mean")[arch], _attr("age_sd")[arch])), 18, 90)
    gender = np.array(GENDERS, dtype=object)[(rng.random(n) < 0.48).astype(int)]
    # Income correlates with spend: elasticity 0.45 on the personal median order value.
    income = 38_000.0 * np.exp(0.45 * (value_mu - np.log(50.0))) * rng.lognormal(0.0, 0.2, n)
    width = max(6, len(str(n)))
    ids = np.array([f"C{i:0{width}d}" for i in range(1, n + 1)], dtype=object)
    return Population(
        end=end,
        history_days=float(history_days),
        customer_id=ids,
        archetype=arch,
        joined=joined,
        quiet_from=quiet_from,
        rate=rate,
        quiet_rate=quiet_rate,
        regularity=_attr("regularity")[arch],
        value_mu=value_mu,
        value_sigma=_attr("order_value_sigma")[arch],
        promo_mult=promo / share,
        off_mult=(1.0 - promo) / (1.0 - share),
        discount_on=_attr("discount_on_promo")[arch],
        discount_off=_attr("discount_off_promo")[arch],
        discount_depth=_attr("discount_depth")[arch],
        refund_rate=_attr("refund_rate")[arch],
        items_mean=_attr("items_mean")[arch],
        category_cum=np.cumsum(cats, axis=1),
        channel_cum=np.cumsum(chans / chans.sum(axis=1, keepdims=True), axis=1),
        age=age,
        gender=gender,
        annual_income=np.round(income, -2),
    )


def _pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw from cumulative probabilities ``cum`` with uniforms ``u``."""
    return np.minimum((u[:, None] > cum).sum(axis=1), cum.shape[1] - 1)


def _orders(
    pop: Population, idx: np.ndarray, ts: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Order details (money, items, category, channel) for customers ``idx`` at times ``ts``."""
    n = len(idx)
    promo = promo_days_mask(np.floor(ts / DAY).astype(np.int64))
    p_discount = np.where(promo, pop.discount_on[idx], pop.discount_off[idx])
    has_discount = rng.random(n) < p_discount
    depth = np.clip(rng.normal(pop.discount_depth[idx], 0.07), 0.05, 0.7)
    list_price = rng.lognormal(pop.value_mu[idx], pop.value_sigma[idx])
    discount = np.round(np.where(has_discount, list_price * depth, 0.0), 2)
    amount = np.maximum(np.round(list_price - discount, 2), 0.01)
    return {
        "amount": amount,
        "discount": discount,
        "items": 1 + rng.poisson(pop.items_mean[idx] - 1.0),
        "category": _pick(pop.category_cum[idx], rng.random(n)),
        "channel": _pick(pop.channel_cum[idx], rng.random(n)),
    }


def _thin(pop: Population, idx: np.ndarray, ts: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Keep candidates so that each customer's rate follows the promotion calendar."""
    mult_max = np.maximum(pop.promo_mult[idx], pop.off_mult[idx])
    promo = promo_days_mask(np.floor(ts / DAY).astype(np.int64))
    mult = np.where(promo, pop.promo_mult[idx], pop.off_mult[idx])
    return u * mult_max < mult


def _renewal(
    rng: np.random.Generator,
    cust: np.ndarray,
    start: np.ndarray,
    length: np.ndarray,
    rate: np.ndarray,
    shape: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times of renewal processes, one per customer, on ``[start, start + length)``.

    Gaps are gamma-distributed with mean ``1 / rate`` and the given ``shape``
    (1: Poisson arrivals; larger: more regular). Vectorised over all customers.
    """
    expected = rate * length
    need = np.where(expected > 0, np.ceil(expected + 6.0 * np.sqrt(expected) + 10.0), 0).astype(
        np.int64
    )
    owner = np.repeat(np.arange(len(cust)), need)
    gaps = rng.gamma(
        np.repeat(shape, need), 1.0 / np.repeat(np.maximum(rate, 1e-300) * shape, need)
    )
    totals = np.cumsum(gaps)
    if not len(totals):
        return cust[:0], start[:0]
    first = np.cumsum(need) - need  # index of each customer's first gap
    before = np.where(first > 0, totals[np.maximum(first - 1, 0)], 0.0)
    offset = totals - np.repeat(before, need)
    keep = offset < np.repeat(length, need)
    return cust[owner[keep]], np.repeat(start, need)[keep] + offset[keep]


def _history_chunk(pop: Population, lo: int, hi: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 1, lo])
    cust = np.arange(lo, hi)
    mult_max = np.maximum(pop.promo_mult[cust], pop.off_mult[cust])
    active_end = np.minimum(pop.quiet_from[cust], pop.end)
    # Candidate arrivals: a renewal process after the first order (gamma gaps; shape 1 is
    # Poisson), then Poisson while quiet, thinned by the promotion calendar.
    spans = (
        (pop.joined[cust], active_end, pop.rate[cust], pop.regularity[cust]),
        (active_end, np.full(len(cust), pop.end), pop.quiet_rate[cust], np.ones(len(cust))),
    )
    idx_parts, ts_parts = [cust], [pop.joined[cust]]  # everyone's first order is at `joined`
    for start, stop, rate, shape in spans:
        idx, ts = _renewal(rng, cust, start, np.maximum(stop - start, 0.0), rate * mult_max, shape)
        keep = _thin(pop, idx, ts, rng.random(len(idx)))
        idx_parts.append(idx[keep])
        ts_parts.append(ts[keep])
    idx = np.concatenate(idx_parts)
    ts = np.concatenate(ts_parts)
    orders = _orders(pop, idx, ts, rng)
    # A small share of purchases is refunded in full some days later.
    refund_at = ts + rng.exponential(10 * DAY, len(idx))
    refunded = (rng.random(len(idx)) < pop.refund_rate[idx]) & (refund_at < pop.end)
    refund_ts = refund_at[refunded]
    kinds = np.concatenate([np.zeros(len(idx), dtype=int), np.ones(int(refunded.sum()), dtype=int)])
    idx_all = np.concatenate([idx, idx[refunded]])
    frame = {
        "customer": idx_all,
        "type": kinds,
        "ts": np.concatenate([ts, refund_ts]),
        "amount": np.concatenate([orders["amount"], orders["amount"][refunded]]),
        "discount": np.concatenate([orders["discount"], np.zeros(int(refunded.sum()))]),
    }
    for key in ("items", "category", "channel"):
        frame[key] = np.concatenate([orders[key], orders[key][refunded]])
    return pd.DataFrame(frame)


def simulate_history(
    pop: Population, *, seed: int = 0, progress: Progress | None = None
) -> pd.DataFrame:
    """The population's past ``history_days`` up to ``pop.end``, one row per event.

    Columns carry the event contract's names (:data:`HISTORY_COLUMNS`); ``ts`` is
    a UTC timestamp (millisecond precision); rows are in event-time order.
    ``progress`` is called with the number of customers done after each chunk.
    """
    parts = []
    for lo in range(0, len(pop), CHUNK_CUSTOMERS):
        hi = min(lo + CHUNK_CUSTOMERS, len(pop))
        parts.append(_history_chunk(pop, lo, hi, seed))
        if progress is not None:
            progress(hi - lo)
    raw = pd.concat(parts, ignore_index=True)
    raw["ts"] = np.round(raw["ts"].to_numpy(), 3)
    raw = raw.sort_values(["ts", "customer", "type"], kind="stable", ignore_index=True)
    cust = raw["customer"].to_numpy()
    return pd.DataFrame(
        {
            "event_id": [f"h{seed}-{i}" for i in range(len(raw))],
            "customer_id": pop.customer_id[cust],
            "type": np.array(["purchase", "refund"], dtype=object)[raw["type"].to_numpy()],
            "ts": pd.to_datetime(
                np.rint(raw["ts"].to_numpy() * 1000).astype(np.int64), unit="ms", utc=True
            ),
            "amount": raw["amount"].to_numpy(),
            "discount": raw["discount"].to_numpy(),
            "items": raw["items"].to_numpy().astype(np.int64),
            "category": np.array(CATEGORIES, dtype=object)[raw["category"].to_numpy()],
            "channel": np.array(CHANNELS, dtype=object)[raw["channel"].to_numpy()],
            "age": pop.age[cust],
            "gender": pop.gender[cust],
            "annual_income": pop.annual_income[cust],
        },
        columns=list(HISTORY_COLUMNS),
    )


def simulate_stream(
    pop: Population,
    *,
    seed: int = 0,
    start: float | None = None,
    events: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
) -> Iterator[CheckoutEvent]:
    """The population's live checkouts from ``start`` (default ``pop.end``), in event-time order.

    Compressed (``rate`` is None): event times follow the customers' own rates, so
    a year passes as fast as the consumer reads. Real time (``rate`` = R events per
    second): who buys keeps the population's proportions, and event times are a
    Poisson schedule of R per second from ``start``; pace it with
    :func:`producer.pacing.paced`. Stops after ``events`` events or when event time
    passes ``start + duration`` seconds, whichever comes first (one is required).
    """
    if events is None and duration is None:
        raise ValueError("give events or duration")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0")
    start = pop.end if start is None else float(start)
    rng = np.random.default_rng([seed, 2])
    # Customers keep the rate they have at the end of history (drifters stay quiet).
    base = np.where(pop.quiet_from < pop.end, pop.quiet_rate, pop.rate)
    weight = base * np.maximum(pop.promo_mult, pop.off_mult)
    cum = np.cumsum(weight)
    total = float(cum[-1])
    names = {"category": CATEGORIES, "channel": CHANNELS}
    emitted, clock, serial = 0, start, 0
    limit = np.inf if duration is None else start + duration
    while True:
        u = rng.random(STREAM_BLOCK) * total
        idx = np.minimum(np.searchsorted(cum, u, side="right"), len(pop) - 1)
        gaps = rng.exponential(1.0 / (rate if rate is not None else total), STREAM_BLOCK)
        candidate_ts = clock + np.cumsum(gaps)
        keep = _thin(pop, idx, candidate_ts, rng.random(STREAM_BLOCK))
        if rate is None:
            ts = candidate_ts[keep]
            clock = float(candidate_ts[-1])
        else:  # real time: accepted events alone fill the R-per-second schedule
            ts = candidate_ts[: int(keep.sum())]
            clock = float(ts[-1]) if len(ts) else clock
        idx = idx[keep]
        orders = _orders(pop, idx, ts, rng)
        refund = rng.random(len(idx)) < pop.refund_rate[idx]
        for j, c in enumerate(idx):
            if ts[j] > limit or (events is not None and emitted >= events):
                return
            serial += 1
            emitted += 1
            yield CheckoutEvent(
                event_id=f"s{seed}-{start:.0f}-{serial}",
                customer_id=pop.customer_id[c],
                ts=round(float(ts[j]), 3),
                amount=float(orders["amount"][j]),
                type="refund" if refund[j] else "purchase",
                discount=0.0 if refund[j] else float(orders["discount"][j]),
                items=int(orders["items"][j]),
                category=names["category"][orders["category"][j]],
                channel=names["channel"][orders["channel"][j]],
                age=float(pop.age[c]),
                gender=str(pop.gender[c]),
                annual_income=float(pop.annual_income[c]),
            )
