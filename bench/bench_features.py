"""Throughput of the one definition of every feature: batch (vectorised) vs event-by-event fold.

Run:  .venv/bin/python bench/bench_features.py [--events 20000000] [--customers 1000000]

Prints events/s of ``batch_states`` on a synthetic table with its text columns (customer_id, type,
gender) categorical (Parquet dictionary columns), Arrow strings and Python strings (CSV),
``derive_frame`` rows/s, and the naive baseline: ``apply_event`` folded event by event over
a sample (plus ``derive`` per event, what the consumer does). Not a test: it asserts
nothing and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import numpy as np
import pandas as pd

from producer.contract import CheckoutEvent
from state.batch import batch_states, derive_frame
from state.features import CustomerState, apply_event, derive

T = TypeVar("T")
DAY = 86_400.0
T_END = 1_700_000_000.0


def synthetic_events(n_events: int, n_customers: int, seed: int) -> pd.DataFrame:
    """A skewed synthetic history: 2 years, ~5% refunds, 10% with a discount, some profiles."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.5, n_customers) + 1.0
    codes = rng.choice(n_customers, size=n_events, p=weights / weights.sum())
    codes[:n_customers] = np.arange(n_customers)  # every customer buys at least once
    ids = pd.Index([f"C{i:08d}" for i in range(n_customers)])
    refund = rng.random(n_events) < 0.05
    amount = np.round(rng.lognormal(3.5, 0.8, n_events), 2)
    discount = np.where(rng.random(n_events) < 0.1, np.round(amount * 0.1, 2), 0.0)
    has_profile = rng.random(n_events) < 0.02
    age = np.where(has_profile, rng.integers(18, 80, n_events).astype(float), np.nan)
    gender = pd.Categorical.from_codes(
        np.where(has_profile, rng.integers(0, 2, n_events), -1), ["Female", "Male"]
    )
    return pd.DataFrame(
        {
            "customer_id": pd.Categorical.from_codes(codes, ids),
            "type": pd.Categorical.from_codes(refund.astype(np.int8), ["purchase", "refund"]),
            "ts": T_END - rng.random(n_events) * 730 * DAY,
            "amount": amount,
            "discount": discount,
            "items": rng.integers(1, 6, n_events),
            "age": age,
            "gender": gender,
            "annual_income": np.where(has_profile, age * 1000.0, np.nan),
        }
    )


def timed(label: str, n: int, unit: str, fn: Callable[[], T]) -> T:
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    print(f"{label:<46} {dt:8.2f} s  {n / dt:>14,.0f} {unit}/s")
    return out


def fold_baseline(events: pd.DataFrame, n: int) -> None:
    sample = events.head(n)
    objs = [
        CheckoutEvent(
            event_id=str(i),
            customer_id=str(r.customer_id),
            ts=r.ts,
            amount=r.amount,
            type=r.type,
            discount=r.discount,
            items=int(r.items),
            age=None if np.isnan(r.age) else r.age,
            gender=None if pd.isna(r.gender) else r.gender,
            annual_income=None if np.isnan(r.annual_income) else r.annual_income,
        )
        for i, r in enumerate(sample.itertuples(index=False))
    ]
    states: dict[str, CustomerState] = defaultdict(CustomerState)

    def fold() -> None:
        for e in objs:
            states[e.customer_id] = apply_event(states[e.customer_id], e)

    def fold_and_derive() -> None:
        for e in objs:
            s = apply_event(states[e.customer_id], e)
            states[e.customer_id] = s
            derive(s, e.ts)

    timed(f"fold apply_event ({n:,} events)", n, "events", fold)
    states.clear()
    timed(f"fold apply_event + derive ({n:,} events)", n, "events", fold_and_derive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--fold-events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}, "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)"
    )
    t = time.perf_counter()
    events = synthetic_events(args.events, args.customers, args.seed)
    print(
        f"generated {len(events):,} events for {args.customers:,} customers "
        f"in {time.perf_counter() - t:.1f} s"
    )

    n = len(events)
    states = timed(
        "batch_states (categorical text, as Parquet)", n, "events", partial(batch_states, events)
    )
    text = ("customer_id", "type", "gender")
    for dtype, label in (("string[pyarrow]", "Arrow strings"), (object, "Python strings, as CSV")):
        other = events.astype(dict.fromkeys(text, dtype))
        timed(f"batch_states ({label})", n, "events", partial(batch_states, other))
        del other
    timed(
        "derive_frame",
        len(states),
        "customers",
        lambda: derive_frame(states, T_END),
    )
    fold_baseline(events, min(args.fold_events, n))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak RSS {peak_gb:.1f} GB")


if __name__ == "__main__":
    main()
