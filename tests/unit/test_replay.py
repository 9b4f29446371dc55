"""Replay: real tables become checked events in event-time order; bad rows are counted."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import msgspec
import pandas as pd
import pytest

from producer.contract import decode, encode
from producer.pacing import write_table
from producer.replay import load_events, parse_mapping, resolve_columns
from producer.simulate import make_population, simulate_history
from state.batch import batch_states, derive_frame
from state.cli import main

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RETAIL = DATA / "Retail_Data_Transactions.csv"

# Published RFM rows of ../shared/data/README.md: (recency days, frequency, monetary).
PUBLISHED_RFM = {
    "CS1112": (62, 15, 1012),
    "CS1113": (36, 20, 1490),
    "CS1114": (33, 19, 1432),
    "CS1115": (12, 22, 1659),
    "CS1116": (204, 13, 857),
}


@pytest.fixture(scope="module")
def retail():
    return load_events(RETAIL)


def test_retail_replay_keeps_every_row_in_event_time_order(retail):
    assert retail.rows == 125_000
    assert len(retail.events) == 125_000 and not retail.rejected
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(retail.events))
    assert len({e.event_id for e in retail.events}) == 125_000
    assert len({e.customer_id for e in retail.events}) == 6_889
    first, last = retail.events[0], retail.events[-1]
    assert pd.Timestamp(first.ts, unit="s").date().isoformat() == "2015-05-16"
    assert pd.Timestamp(last.ts, unit="s").date().isoformat() == "2019-03-16"


def test_retail_replay_gives_the_published_rfm_figures(retail):
    """Through the state/ rules: recency from last date + 1 day, orders, net spend."""
    events = pd.DataFrame(
        {
            "customer_id": [e.customer_id for e in retail.events],
            "ts": [e.ts for e in retail.events],
            "amount": [e.amount for e in retail.events],
        }
    )
    snapshot = events["ts"].max() + 86_400
    features = derive_frame(batch_states(events), snapshot)
    for customer, (recency, frequency, monetary) in PUBLISHED_RFM.items():
        row = features.loc[customer]
        assert (round(row["recency_days"]), row["orders"], row["net_spend"]) == (
            recency,
            frequency,
            monetary,
        ), customer


def test_replayed_events_survive_the_wire(retail):
    for event in retail.events[:2000]:
        assert decode(encode(event), event.customer_id.encode()) == event


def test_event_ids_are_deterministic_and_depend_on_the_row(tmp_path: Path):
    table = tmp_path / "t.csv"
    table.write_text("customer_id,ts,amount\nD1,100,5\nD1,100,5\n")
    first = [e.event_id for e in load_events(table).events]
    assert first == [e.event_id for e in load_events(table).events]
    assert len(set(first)) == 2  # identical rows are still two transactions
    table.write_text("customer_id,ts,amount\nD1,100,6\nD1,100,5\n")
    changed = [e.event_id for e in load_events(table).events]
    assert changed[1] == first[1] and changed[0] != first[0]


def test_cdnow_from_the_lifetimes_package():
    result = load_events("cdnow")
    assert (result.rows, len(result.events), dict(result.rejected)) == (69_659, 69_659, {})
    customers = {e.customer_id for e in result.events}
    assert len(customers) == 23_570
    assert "00001" in customers  # ids keep their leading zeros
    first = result.events[0]
    assert pd.Timestamp(first.ts, unit="s").date().isoformat() == "1997-01-01"
    assert any(e.items > 1 for e in result.events)  # number_of_cds -> items


def test_bad_rows_are_counted_with_reasons_and_never_become_events(tmp_path: Path):
    table = tmp_path / "orders.csv"
    table.write_text(
        "CustomerID,InvoiceDate,Total,Quantity\n"
        "A1,2024-01-02T10:00:00Z,10.5,1\n"
        "A2,2024-01-01T09:00:00Z,20,2\n"
        "A3,not a date,5,1\n"
        "A4,2024-01-03T00:00:00Z,-3,1\n"
        "bad id!,2024-01-03T00:00:00Z,3,1\n"
        "A5,2024-01-03T00:00:00Z,abc,1\n"
        ",2024-01-03T00:00:00Z,3,1\n"
        "A6,2024-01-03T00:00:00Z,3,0\n"
        "A7,2031-01-01T00:00:00Z,3,1\n"
        "A8,,3,1\n"
    )
    result = load_events(table, now=1_800_000_000.0)
    assert [e.customer_id for e in result.events] == ["A2", "A1"]  # event-time order
    assert dict(result.rejected) == {
        "bad_ts": 1,
        "negative:amount": 1,
        "invalid_customer_id": 1,
        "bad_type:amount": 1,
        "missing_field:customer_id": 1,
        "bad_value:items": 1,
        "future_ts": 1,
        "missing_field:ts": 1,
    }
    assert result.examples["bad_ts"][0] == 3  # 1-based data row
    assert "rejected=8" in result.summary()


def test_explicit_mapping_and_date_format(tmp_path: Path):
    table = tmp_path / "t.csv"
    table.write_text("who;when;paid;saved\nX1;31/12/2023;9.99;1.00\n".replace(";", ","))
    mapping = parse_mapping("customer_id=who,ts=when,amount=paid,discount=saved")
    result = load_events(table, mapping=mapping, date_format="%d/%m/%Y")
    (event,) = result.events
    assert (event.customer_id, event.amount, event.discount) == ("X1", 9.99, 1.0)
    assert event.ts == pd.Timestamp("2023-12-31", tz="UTC").timestamp()
    with pytest.raises(ValueError, match="no column for 'ts'"):
        resolve_columns(["who", "paid"], {"customer_id": "who", "amount": "paid"})
    with pytest.raises(ValueError, match="bad mapping"):
        parse_mapping("nonsense")


def test_parquet_input_and_epoch_seconds(tmp_path: Path):
    path = tmp_path / "t.parquet"
    pd.DataFrame(
        {"customer_id": ["P1", "P2"], "ts": [200.0, 100.0], "amount": [1.0, 2.0]}
    ).to_parquet(path)
    result = load_events(path)
    assert [(e.customer_id, e.ts) for e in result.events] == [("P2", 100.0), ("P1", 200.0)]


def test_cli_replay_writes_events_and_reports_rejections(tmp_path: Path, capsys):
    table = tmp_path / "orders.csv"
    table.write_text(
        "customer_id,ts,amount\nB1,2024-01-01T00:00:00Z,1\nB2,2024-01-01T00:00:00Z,-1\n"
    )
    out = tmp_path / "events.jsonl"
    assert main(["produce", "replay", str(table), "--out", str(out)]) == 0
    lines = out.read_bytes().splitlines()
    assert [json.loads(line)["customer_id"] for line in lines] == ["B1"]
    printed = capsys.readouterr().out
    assert "rows=2 events=1 rejected=1 negative:amount=1" in printed
    assert "written=1" in printed


def test_cli_replay_of_a_missing_column_is_a_clear_error(tmp_path: Path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("CustomerID,amount\nC1,3\n")
    assert main(["produce", "replay", str(table), "--dry-run"]) == 2
    assert "no column for 'ts'" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_simulated_history_file_replays_to_the_same_events(tmp_path: Path, suffix: str):
    """History files carry the contract's columns: replay needs no mapping and keeps the ids."""
    history = simulate_history(make_population(150, seed=8, end=1_780_000_000.0), seed=8)
    path = tmp_path / f"history{suffix}"
    write_table(history, path)
    result = load_events(path, now=1_780_000_000.0)
    assert not result.rejected
    replayed = pd.DataFrame([msgspec.structs.asdict(e) for e in result.events])
    expected = history.assign(ts=(history["ts"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds())
    columns = list(expected.columns)
    pd.testing.assert_frame_equal(replayed[columns], expected, check_dtype=False, rtol=0, atol=1e-6)
