"""Naming reads the profile; names are unique; RFM scores and labels; drivers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offline.naming import (
    NAME_RULES,
    name_segments,
    profile_segments,
    rfm_scores,
    rfm_segment,
    separation,
    surrogate_rules,
)


def _profiles(z: dict[int, dict[str, float]]) -> pd.DataFrame:
    rows = []
    for sid, zs in z.items():
        row = {"segment_id": sid, "size": 10, "share": 0.1}
        for f, v in zs.items():
            row.update({f"mean_{f}": 1.0 + v, f"median_{f}": 1.0 + v, f"z_{f}": v})
        rows.append(row)
    return pd.DataFrame(rows).set_index("segment_id")


def test_mall_like_profiles_get_the_names_a_marketer_would_give() -> None:
    feats = ["annual_income", "spending_score"]
    z = {
        1: {"annual_income": -0.2, "spending_score": 0.0},
        2: {"annual_income": 1.0, "spending_score": 1.2},
        3: {"annual_income": 1.1, "spending_score": -1.3},
        4: {"annual_income": -1.3, "spending_score": -1.1},
        5: {"annual_income": -1.3, "spending_score": 1.1},
    }
    names = name_segments(_profiles(z), feats)["name"].to_dict()
    assert names == {
        1: "Average Customers",
        2: "High-Spenders",
        3: "Careful Affluent",
        4: "Budget Shoppers",
        5: "Impulse Spenders",
    }


def test_transaction_profiles_get_behaviour_names() -> None:
    feats = ["recency_days", "orders", "net_spend", "tenure_days", "discount_share"]
    base = dict.fromkeys(feats, 0.0)
    z = {
        1: {**base, "recency_days": 1.5, "orders": 0.3, "net_spend": 0.4},
        2: {**base, "tenure_days": -1.4, "recency_days": -0.8, "orders": -0.7},
        3: {**base, "discount_share": 1.6},
        4: {**base, "orders": 1.3, "recency_days": -0.6, "net_spend": 0.2},
        5: {**base, "orders": -1.0, "net_spend": -0.2},
        6: {**base, "net_spend": 1.4},
    }
    names = name_segments(_profiles(z), feats)["name"].to_dict()
    assert names[1] == "At-Risk"
    assert names[2] == "New Customers"
    assert names[3] == "Discount Seekers"
    assert names[4] == "Loyal Customers"
    assert names[5] == "Infrequent Shoppers"
    assert names[6] == "High-Spenders"


def test_names_are_unique_even_when_profiles_look_alike() -> None:
    feats = ["net_spend", "orders"]
    z = {i: {"net_spend": 1.0 + i / 10, "orders": 0.1} for i in range(1, 6)}
    out = name_segments(_profiles(z), feats)
    assert out["name"].is_unique
    assert all(out["description"].str.len() > 0) and all(out["action"].str.len() > 0)


def test_every_rule_has_a_description_and_an_action() -> None:
    for name, (_rule, desc, action) in NAME_RULES.items():
        assert desc and action, name


def test_profiles_separation_and_surrogate_rules_on_two_clear_groups() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "annual_income": np.r_[rng.normal(30, 3, 100), rng.normal(90, 3, 100)],
            "age": rng.normal(40, 10, 200),
        }
    )
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    Xt = frame.to_numpy()
    prof = profile_segments(frame, ["annual_income", "age"], Xt, labels, [7, 9])
    assert prof.loc[7, "size"] == 100 and prof.loc[9, "share"] == 0.5
    assert prof.loc[9, "z_annual_income"] > 0.9 and abs(prof.loc[9, "z_age"]) < 0.5
    sep = separation(Xt, labels, ["annual_income", "age"])
    assert sep.index[0] == "annual_income" and sep["annual_income"] > 100 * sep["age"]
    rules, agreement = surrogate_rules(frame, ["annual_income", "age"], labels, [7, 9])
    assert agreement == 1.0
    assert rules[7].startswith("annual income <=") and rules[9].startswith("annual income >")


@pytest.mark.parametrize(
    ("r", "f", "label"),
    [(5, 5, "Champions"), (4, 4, "Loyal Customers"), (5, 1, "New Customers"),
     (4, 1, "Promising"), (3, 3, "Need Attention"), (3, 1, "About to Sleep"),
     (2, 3, "At Risk"), (1, 5, "Can't Lose Them"), (1, 1, "Hibernating"),
     (5, 2, "Potential Loyalists")],
)  # fmt: skip
def test_standard_rfm_grid(r: int, f: int, label: str) -> None:
    assert rfm_segment(r, f) == label


def test_rfm_quintiles_reward_recent_frequent_big_spenders() -> None:
    n = 100
    recency = pd.Series(np.arange(n, dtype=float))  # customer 0 bought most recently
    freq = pd.Series(np.arange(n, 0, -1, dtype=float))  # and most often
    money = pd.Series(np.arange(n, 0, -1, dtype=float))
    out = rfm_scores(recency, freq, money)
    assert out.loc[0, ["rfm_r", "rfm_f", "rfm_m"]].tolist() == [5, 5, 5]
    assert out.loc[0, "rfm_score"] == "555" and out.loc[0, "rfm_segment"] == "Champions"
    assert out.loc[n - 1, "rfm_segment"] == "Hibernating"
    assert out["rfm_r"].value_counts().tolist() == [20] * 5
