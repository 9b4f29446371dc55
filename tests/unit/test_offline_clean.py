"""Cleaning: every rule counts the rows it touched; outliers capped or kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offline.clean import clean_customers, clean_transactions, treat_outliers


def _counts(steps) -> dict[str, int]:
    return {f"{s.rule}|{s.column}": s.rows_affected for s in steps}


def test_customers_rules_are_counted() -> None:
    df = pd.DataFrame(
        {
            "customer_id": ["a", "b", None, "a", "c d", "e"],
            "age": [30.0, -4.0, 50.0, 31.0, 200.0, np.nan],
            "annual_income": [10.0, 20.0, 30.0, 40.0, -1.0, 60.0],
            "gender": ["F", None, "M", "F", "M", "F"],
        }
    )
    out, steps = clean_customers(df)
    c = _counts(steps)
    assert c["drop rows missing customer id|customer_id"] == 1
    assert c["normalise invalid customer ids|customer_id"] == 1
    assert c["drop repeated customer ids (keep first)|customer_id"] == 1
    assert c["impossible age -> missing|age"] == 2
    assert c["negative value -> missing|annual_income"] == 1
    assert c["impute missing number with median|age"] == 3
    assert c["impute missing text with 'unknown'|gender"] == 1
    assert out["customer_id"].tolist() == ["a", "b", "c_d", "e"]
    assert out["age"].tolist() == [30.0, 30.0, 30.0, 30.0]
    assert out.isna().sum().sum() == 0


def test_transactions_rules_are_counted_and_future_is_relative_to_as_of() -> None:
    df = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", None, "b", "b", "b", "b"],
            "ts": [1.0, 2.0, np.nan, 3.0, 4.0, 4.0, 99.0, 5.0],
            "amount": [10.0, -1.0, 3.0, 3.0, 5.0, 5.0, 1.0, np.nan],
            "discount": [0.0, 0.0, 0.0, 0.0, -2.0, -2.0, 0.0, 0.0],
            "items": [1] * 8,
            "type": ["purchase", "purchase", "purchase", "purchase", "purchase", "purchase",
                     "purchase", "purchase"],
        }
    )  # fmt: skip
    out, steps = clean_transactions(df, as_of=50.0)
    c = _counts(steps)
    assert c["drop rows missing customer id|customer_id"] == 1
    assert c["drop rows with missing/unparseable time|ts"] == 1
    assert c["drop rows with missing amount|amount"] == 1
    assert c["drop negative amounts|amount"] == 1
    assert c["negative discount -> 0|discount"] == 2
    assert c["drop events after as_of (future dates)|ts"] == 1
    # identical rows without an event id are real repeat purchases: kept, but counted
    assert c["identical rows without event id (kept as repeat purchases)|*"] == 1
    assert out["amount"].tolist() == [10.0, 5.0, 5.0]


def test_duplicate_event_ids_are_dropped() -> None:
    df = pd.DataFrame(
        {"event_id": ["e1", "e1", "e2"], "customer_id": ["a"] * 3, "ts": [1.0, 1.0, 2.0],
         "amount": [1.0] * 3, "discount": [0.0] * 3, "items": [1] * 3, "type": ["purchase"] * 3}
    )  # fmt: skip
    out, steps = clean_transactions(df, now=10.0)
    assert len(out) == 2
    assert _counts(steps)["drop duplicate event ids|event_id"] == 1


@pytest.mark.parametrize("mode", ["cap", "keep"])
def test_outliers_use_a_robust_fence_in_model_space(mode: str) -> None:
    rng = np.random.default_rng(0)
    spend = np.append(rng.lognormal(4, 0.3, 500), [1e7])
    frame = pd.DataFrame({"net_spend": spend, "age": np.append(rng.normal(40, 5, 500), [41])})
    out, steps = treat_outliers(frame, ["net_spend", "age"], {"net_spend": "log1p"}, mode)
    assert [(s.column, s.rows_affected, s.action) for s in steps] == [
        ("net_spend", 1, "capped" if mode == "cap" else "kept")
    ]
    if mode == "cap":
        assert out["net_spend"].iloc[-1] < 1e4 and out["net_spend"].iloc[-1] > spend[:-1].max()
        assert (out["net_spend"].iloc[:-1] == spend[:-1]).all()
    else:
        assert out["net_spend"].iloc[-1] == 1e7
