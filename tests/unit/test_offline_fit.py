"""The whole job: Retail RFM rows as published, joined inputs, the CLI and its artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline.artifacts import read_assignments, read_model, read_states, write_artifacts
from offline.fit import FitOptions, fit
from offline.load import load_transactions, parse_as_of
from state.cli import main
from state.model import SegmentModel

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# data README: RFM with snapshot = last date + 1 day (R days, F transactions, M total amount)
PUBLISHED_RFM = {
    "CS1112": (62, 15, 1012),
    "CS1113": (36, 20, 1490),
    "CS1114": (33, 19, 1432),
    "CS1115": (12, 22, 1659),
    "CS1116": (204, 13, 857),
}


@pytest.fixture(scope="module")
def retail():
    tx = load_transactions(DATA / "Retail_Data_Transactions.csv")
    opts = FitOptions(as_of=parse_as_of("2019-03-17"), k_range=(2, 3), n_bootstrap=0,
                      algorithms=("kmeans",))  # fmt: skip
    return fit(None, tx, opts)


def test_retail_recency_frequency_monetary_match_the_published_rows(retail) -> None:
    rows = retail.customers.loc[list(PUBLISHED_RFM), ["recency_days", "orders", "net_spend"]]
    got = {cid: tuple(int(v) for v in row) for cid, row in rows.iterrows()}
    assert got == PUBLISHED_RFM
    assert (rows.to_numpy() == np.array(list(PUBLISHED_RFM.values()))).all()  # exact, not rounded
    assert len(retail.customers) == 6889
    assert retail.as_of == parse_as_of("2019-03-17")


def test_retail_features_come_from_the_state_rules_and_rfm_is_attached(retail) -> None:
    assert retail.features[:3] == ["recency_days", "orders", "net_spend"]
    assert "discount_share" in retail.meta["dropped_constant_features"]  # no discounts in the data
    assert (
        retail.model.transforms["net_spend"] == "log1p"
        and "recency_days" not in retail.model.transforms
    )
    assert {"rfm_r", "rfm_f", "rfm_m", "rfm_score", "rfm_segment"} <= set(retail.customers.columns)
    assert retail.customers.loc["CS1115", "rfm_r"] == 5
    st = retail.states.loc["CS1112"]
    assert (st["orders"], st["gross_cents"]) == (15, 101200)


def test_as_of_defaults_to_the_latest_event_never_the_clock() -> None:
    tx = pd.DataFrame(
        {"customer_id": ["a", "a", "b", "c"], "ts": [0.0, 86_400.0, 3 * 86_400.0, 2 * 86_400.0],
         "amount": [10.0, 20.0, 5.0, 7.0], "discount": [0.0, 5.0, 0.0, 0.0], "items": [1] * 4,
         "type": ["purchase"] * 4}
    )  # fmt: skip
    r = fit(None, tx, FitOptions(k_range=(2,), n_bootstrap=0, algorithms=("kmeans",)))
    assert r.as_of == 3 * 86_400.0 and r.model.as_of == r.as_of
    assert r.customers.loc["a", "recency_days"] == 2.0


def test_customers_and_transactions_are_joined_on_customer_id() -> None:
    customers = pd.DataFrame({"customer_id": ["a", "b", "c"], "age": [20.0, 60.0, 40.0]})
    tx = pd.DataFrame(
        {"customer_id": ["a", "b", "x"], "ts": [0.0, 10.0, 20.0], "amount": [10.0, 20.0, 30.0],
         "discount": [0.0] * 3, "items": [1] * 3, "type": ["purchase"] * 3}
    )  # fmt: skip
    r = fit(customers, tx, FitOptions(features=("orders", "age"), k_range=(2,), n_bootstrap=0,
                                      algorithms=("kmeans",)))  # fmt: skip
    assert sorted(r.customers.index) == ["a", "b", "c", "x"]
    assert r.customers.loc["c", "orders"] == 0  # no transactions: derive()'s zeros
    assert r.customers.loc["x", "age"] == 40.0  # not in the customers table: median
    assert r.states.loc["b", "age"] == 60.0 and r.states.loc["c", "orders"] == 0


def test_cli_fit_writes_model_assignments_states_and_reads_back(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fit"
    code = main(
        ["offline", "fit", "--customers", str(DATA / "Mall_Customers.csv"),
         "--features", "annual_income,spending_score", "--scaler", "none", "--k", "4..6",
         "--algorithms", "kmeans,gmm", "--bootstrap", "2", "--model-version", "mall-v1",
         "--out", str(out), "--no-report"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "k=5" in printed and "High-Spenders" in printed
    model = read_model(out)
    assert json.loads((out / "model.json").read_text()) == model.to_dict()
    assert model.version == "mall-v1" and model.scaler_kind == "none" and len(model.segments) == 5
    assign = read_assignments(out)
    assert list(assign.columns[:2]) == ["segment_id", "segment_name"]
    assert assign["segment_id"].value_counts().sort_values(ascending=False).tolist() == [
        81,
        39,
        35,
        23,
        22,
    ]
    # the published model reproduces every stored assignment from the features
    rows = assign[list(model.features)].to_dict("records")
    ids = [model.segments[i].id for i in model.nearest(model.matrix(rows))]
    assert ids == assign["segment_id"].tolist()
    states = read_states(out)
    assert states.loc["1", "age"] == 19 and states.loc["1", "gender"] == "Male"


def test_write_artifacts_calls_the_report_writer(tmp_path: Path) -> None:
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(60)],
                              "annual_income": np.r_[np.full(30, 20.0), np.full(30, 80.0)]
                              + np.arange(60) % 5})  # fmt: skip
    r = fit(customers, None, FitOptions(k_range=(2, 3), n_bootstrap=0, algorithms=("kmeans",)))
    paths = write_artifacts(r, tmp_path)
    assert (tmp_path / "report.html").exists() and tmp_path / "report.html" in paths
    assert SegmentModel.from_dict(json.loads((tmp_path / "model.json").read_text())) == r.model


def test_the_model_transforms_raw_features_exactly_as_the_fit_did(retail) -> None:
    rows = retail.customers[list(retail.features)].head(200).to_dict("records")
    np.testing.assert_allclose(retail.model.matrix(rows), retail.X[:200], rtol=1e-9, atol=1e-12)
    assigned = [retail.model.assign(r).id for r in rows]
    assert assigned == retail.customers["segment_id"].head(200).tolist()
