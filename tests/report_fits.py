"""Fits the report tests draw from: the real :func:`offline.fit.fit` on small inputs.

Mall Customers, synthetic transactions (RFM columns, and a re-fit with a transition matrix), a
customers table whose column name carries hostile HTML, and structureless noise. Few bootstrap
resamples keep them fast. The fits are cached per process, shared by the unit and the browser
tests (one module, imported under one name); nothing may mutate a returned FitResult.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from offline.fit import FitOptions, Previous, fit
from offline.load import load_customers
from offline.result import FitResult

MALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "Mall_Customers.csv"
HOSTILE = '<script>alert("x")</script>'
# few bootstrap resamples: fast; the synthetic fits only need a segmentation, not the whole
# comparison (the Mall fit covers that)
QUICK = FitOptions(k_range=tuple(range(2, 6)), algorithms=("kmeans",), n_bootstrap=3, seed=42)


@functools.cache
def mall_fit_result() -> FitResult:
    """Mall Customers on annual income + spending score (k=5 expected)."""
    options = FitOptions(features=("annual_income", "spending_score"), n_bootstrap=3, seed=42)
    return fit(load_customers(MALL), None, options)


def synthetic_transactions(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """Three kinds of buyers (rare/cheap, regular, frequent/big); a hostile category."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    orders = np.array([2, 8, 20])[kind] + rng.integers(0, 3, n)
    cust = np.repeat(np.arange(n), orders)
    k = kind[cust]
    days = rng.uniform(0, 1, len(cust)) * np.array([300, 60, 20])[k]
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in cust],
            "ts": 1.7e9 - days * 86400,
            "amount": np.array([20.0, 60.0, 200.0])[k] * rng.uniform(0.7, 1.3, len(cust)),
            "type": "purchase",
            "discount": 0.0,
            "items": 1,
            "category": np.where(rng.random(len(cust)) < 0.5, "books", HOSTILE),
        }
    )


@functools.cache
def refit_result() -> FitResult:
    """A fit on transactions, then a re-fit on 80% of them against it (transition matrix)."""
    tx = synthetic_transactions()
    first = fit(None, tx, QUICK)
    previous = Previous(model=first.model, assignments=first.customers["segment_id"])
    return fit(None, tx.sample(frac=0.8, random_state=1), QUICK, previous=previous)


@functools.cache
def hostile_fit_result(n: int = 300) -> FitResult:
    """Customers-only data whose second feature is named with a script tag."""
    rng = np.random.default_rng(5)
    loyalty = np.r_[rng.normal(0, 1, n // 2), rng.normal(5, 1, n - n // 2)]
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "age": rng.integers(18, 80, n).astype(float),
            f"loyalty {HOSTILE}": loyalty,
        }
    )
    return fit(customers, None, QUICK)


def structureless_fit_result(n: int = 300) -> FitResult:
    """Uniform noise in six dimensions: no cluster structure, so the fit must warn."""
    rng = np.random.default_rng(11)
    customers = pd.DataFrame(rng.uniform(0, 100, (n, 6)), columns=[f"x{i}" for i in range(6)])
    customers.insert(0, "customer_id", [f"c{i}" for i in range(n)])
    return fit(customers, None, QUICK)
