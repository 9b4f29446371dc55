"""Loading: column names, customer-id spellings, mappings, dates, encodings, Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from offline.load import (
    LoadOptions,
    load_customers,
    load_transactions,
    parse_as_of,
    parse_mapping,
)
from state.errors import ConfigError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_mall_columns_become_snake_case_with_the_id_recognised() -> None:
    df = load_customers(DATA / "Mall_Customers.csv")
    assert list(df.columns) == ["customer_id", "gender", "age", "annual_income", "spending_score"]
    assert df["customer_id"].iloc[0] == "1"
    assert len(df) == 200


@pytest.mark.parametrize(
    "spelling", ["CustomerID", "Customer ID", "customer_id", "Customer_ID", "cust_id"]
)
def test_common_customer_id_spellings_are_recognised(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "c.csv"
    pd.DataFrame({spelling: [7, 8], "Age": [30, 40]}).to_csv(path, index=False)
    assert load_customers(path)["customer_id"].tolist() == ["7", "8"]


def test_retail_dates_like_16_may_15_parse_to_utc_midnight() -> None:
    tx = load_transactions(DATA / "Retail_Data_Transactions.csv")
    assert {"customer_id", "ts", "amount", "discount", "items", "type"} <= set(tx.columns)
    assert tx["ts"].notna().all()
    first = tx.iloc[0]  # CS5295, 11-Feb-17, 35
    assert (first["customer_id"], first["ts"], first["amount"]) == ("CS5295", 1486771200.0, 35)
    assert pd.Timestamp(tx["ts"].max(), unit="s") == pd.Timestamp("2019-03-16")


def test_latin1_file_falls_back_and_explicit_mapping_wins(tmp_path: Path) -> None:
    mapping = parse_mapping(["CUSTOMERNAME=customer_id,ORDERDATE=ts", "SALES=amount"])
    tx = load_transactions(DATA / "sales_data_sample.csv", LoadOptions(mapping=mapping))
    assert tx.attrs["encoding"] == "latin-1"
    assert len(tx) == 2823 and tx["ts"].notna().all()
    assert tx["items"].sum() > len(tx)  # QUANTITYORDERED recognised as items


def test_mapping_file_json_and_toml(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    pd.DataFrame({"who": ["a"], "when": ["03/04/2020"], "paid": [5.0]}).to_csv(src, index=False)
    cfg = tmp_path / "map.json"
    cfg.write_text(
        json.dumps({"map": {"who": "customer_id", "when": "ts"}, "date_format": "%d/%m/%Y"})
    )
    opts = LoadOptions.from_file(cfg, mapping={"paid": "amount"})
    tx = load_transactions(src, opts)
    assert pd.Timestamp(tx["ts"].iloc[0], unit="s") == pd.Timestamp("2020-04-03")
    toml = tmp_path / "map.toml"
    toml.write_text(
        'date_format = "%m/%d/%Y"\n[map]\nwho = "customer_id"\nwhen = "ts"\npaid = "amount"\n'
    )
    tx = load_transactions(src, LoadOptions.from_file(toml))
    assert pd.Timestamp(tx["ts"].iloc[0], unit="s") == pd.Timestamp("2020-03-04")


def test_parquet_with_contract_columns_needs_no_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {"event_id": ["e1"], "customer_id": ["c1"], "type": ["purchase"], "ts": [1.7e9],
         "amount": [9.5], "discount": [0.5], "items": [2], "category": ["toys"]}
    ).to_parquet(path)  # fmt: skip
    tx = load_transactions(path)
    assert tx.iloc[0][["customer_id", "ts", "amount", "discount", "items"]].tolist() == [
        "c1", 1.7e9, 9.5, 0.5, 2
    ]  # fmt: skip


def test_missing_columns_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    pd.DataFrame({"foo": [1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="customer id"):
        load_customers(path)
    with pytest.raises(ConfigError, match="--map"):
        load_transactions(path)


def test_as_of_accepts_dates_and_epoch_seconds() -> None:
    assert parse_as_of("2019-03-17") == 1552780800.0
    assert parse_as_of("1552780800") == 1552780800.0
    assert parse_as_of(None) is None
    with pytest.raises(ConfigError):
        parse_as_of("not a date")


def test_cdnow_whitespace_file_keeps_leading_zeros_and_reads_yyyymmdd() -> None:
    import lifetimes

    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    tx = load_transactions(path)
    assert len(tx) == 69_659 and tx["customer_id"].nunique() == 23_570
    first = tx.iloc[0]
    assert first["customer_id"] == "00001"
    assert pd.Timestamp(first["ts"], unit="s") == pd.Timestamp("1997-01-01")
    assert (first["items"], first["amount"]) == (1, 11.77)  # number_of_cds, dollar_value
