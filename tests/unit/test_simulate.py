"""The simulator: valid events, determinism, realistic behaviour, recoverable archetypes."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from producer.archetypes import ARCHETYPE_NAMES, ARCHETYPES, promo_day_share, promo_days_mask
from producer.contract import CheckoutEvent, decode, encode, validate
from producer.simulate import (
    DAY,
    HISTORY_COLUMNS,
    make_population,
    simulate_history,
    simulate_stream,
)
from state.batch import batch_states, derive_frame
from state.cli import main

END = 1_780_000_000.0  # 2026-05-28, a fixed end of history keeps every test reproducible


@pytest.fixture(scope="module")
def population():
    return make_population(4000, seed=11, end=END)


@pytest.fixture(scope="module")
def history(population):
    return simulate_history(population, seed=11)


def _epoch(ts: pd.Series) -> np.ndarray:
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def _features(history: pd.DataFrame, at: float) -> pd.DataFrame:
    """Per-customer features by the state/ rules (the ones the offline job uses)."""
    events = history.assign(ts=_epoch(history["ts"]))
    return derive_frame(batch_states(events), at)


# -- the contract -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 500.0], ids=["compressed", "real-time"])
def test_every_streamed_event_passes_the_decoder(population, rate):
    events = list(simulate_stream(population, seed=3, events=3000, rate=rate))
    assert len(events) == 3000
    for event in events:
        decoded = decode(encode(event), event.customer_id.encode(), now=event.ts)
        assert decoded == event, decoded
    assert {e.type for e in events} == {"purchase", "refund"}


def test_every_history_row_is_a_valid_event(history):
    rows = history.assign(ts=_epoch(history["ts"])).to_dict("records")
    events = [validate(row) for row in rows]
    assert len(events) == len(history)
    assert history["event_id"].is_unique
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["ts"].is_monotonic_increasing


def test_history_and_stream_ids_never_collide(population, history):
    stream_ids = {e.event_id for e in simulate_stream(population, seed=11, events=2000)}
    assert stream_ids.isdisjoint(set(history["event_id"]))


# -- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_identical_history_and_stream():
    a, b = (make_population(500, seed=5, end=END) for _ in range(2))
    pd.testing.assert_frame_equal(simulate_history(a, seed=5), simulate_history(b, seed=5))
    assert list(simulate_stream(a, seed=5, events=500)) == list(
        simulate_stream(b, seed=5, events=500)
    )
    pd.testing.assert_frame_equal(a.truth(), b.truth())


def test_another_seed_gives_another_population():
    a = make_population(500, seed=5, end=END)
    c = make_population(500, seed=6, end=END)
    assert not a.truth().equals(c.truth())
    assert len(simulate_history(a, seed=5)) != len(simulate_history(c, seed=6))


def test_cli_output_is_byte_identical_under_a_seed(tmp_path: Path):
    outputs = []
    for run in ("a", "b"):
        d = tmp_path / run
        d.mkdir()
        argv = [
            "produce", "simulate", "--customers", "300", "--events", "400",
            "--seed", "9", "--start", "2026-05-01T00:00:00Z", "--history-days", "120",
            "--history", str(d / "history.csv"), "--truth", str(d / "truth.csv"),
            "--out", str(d / "stream.jsonl"),
        ]  # fmt: skip
        assert main(argv) == 0
        outputs.append([(d / f).read_bytes() for f in ("history.csv", "truth.csv", "stream.jsonl")])
    assert outputs[0] == outputs[1]
    stream = outputs[0][2].splitlines()
    assert len(stream) == 400
    first = decode(stream[0], None)  # no key in a file: only the key check may fail
    assert getattr(first, "reason", None) == "missing_key"
    header = outputs[0][0].splitlines()[0].decode()
    assert header == ",".join(HISTORY_COLUMNS)


# -- behaviour --------------------------------------------------------------------------------


def test_archetype_shares_follow_the_weights(population):
    shares = population.truth()["archetype"].value_counts(normalize=True)
    for archetype in ARCHETYPES:
        assert abs(shares[archetype.name] - archetype.weight) < 0.03, archetype.name
    assert set(shares.index) == set(ARCHETYPE_NAMES)


def test_archetypes_differ_as_their_names_say(population, history):
    features = _features(history, population.end)
    truth = population.truth().set_index("customer_id")["archetype"].reindex(features.index)
    med = features.drop(columns="gender").groupby(truth).median()
    assert len(features) == len(population)  # everyone bought at least once
    assert med["avg_order_value"].idxmax() == "High-Spenders"
    assert med["discount_share"].idxmax() == "Discount Seekers"
    assert med["orders"].idxmax() == "Loyal Customers"
    assert med["tenure_days"].idxmin() == "New Customers"
    assert med["recency_days"].idxmax() == "At-Risk"
    assert med["orders"].drop("New Customers").idxmin() == "Infrequent Shoppers"


def test_discount_seekers_buy_on_promotion_days(population, history):
    truth = population.truth().set_index("customer_id")["archetype"]
    purchases = history[history["type"] == "purchase"]
    day = np.floor(_epoch(purchases["ts"]) / DAY).astype(np.int64)
    on_promo = pd.Series(promo_days_mask(day), index=purchases.index)
    kind = truth.reindex(purchases["customer_id"]).to_numpy()
    seekers = kind == "Discount Seekers"
    assert on_promo[seekers].mean() > 0.55  # about 0.7 of their orders, on ~14% of days
    assert abs(on_promo[kind == "Loyal Customers"].mean() - promo_day_share()) < 0.03
    discounted = purchases["discount"] > 0
    assert discounted[on_promo.to_numpy()].mean() > 2 * discounted[~on_promo.to_numpy()].mean()


def test_income_rises_with_spend_and_refunds_are_rare(population, history):
    features = _features(history, population.end)
    rho = features["avg_order_value"].corr(features["annual_income"], method="spearman")
    assert rho > 0.5
    refunds = history["type"] == "refund"
    assert 0.005 < refunds.mean() < 0.05
    assert (history.loc[refunds, "discount"] == 0).all()
    ages = history.groupby("customer_id")["age"].first()
    assert ages.between(18, 90).all()


def test_real_time_stream_keeps_the_target_rate(population):
    events = list(simulate_stream(population, seed=2, start=END + 5, duration=60.0, rate=200.0))
    assert 0.9 * 12_000 < len(events) < 1.1 * 12_000
    assert events[0].ts >= END + 5 and events[-1].ts <= END + 65
    assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))


def test_compressed_stream_follows_the_population_rates(population):
    """A month of compressed stream: orders per customer per archetype as configured."""
    events = list(simulate_stream(population, seed=4, duration=30 * DAY))
    truth = population.truth().set_index("customer_id")["archetype"]
    counts = pd.Series([e.customer_id for e in events]).map(truth).value_counts()
    sizes = truth.value_counts()
    per_year = counts / sizes * 365 / 30
    assert 50 < per_year["Loyal Customers"] < 95  # configured 70
    assert per_year.get("At-Risk", 0) < 2  # drifted away: about 0.25 a year
    assert isinstance(events[0], CheckoutEvent)


def test_a_year_of_history_for_10000_customers_takes_seconds():
    start = time.perf_counter()
    frame = simulate_history(make_population(10_000, seed=1, end=END), seed=1)
    elapsed = time.perf_counter() - start
    assert len(frame) > 150_000
    assert elapsed < 10.0, f"{elapsed:.1f} s"


# -- recoverable archetypes -------------------------------------------------------------------


def test_kmeans_on_state_features_recovers_the_archetypes(population, history):
    """log1p + standardised state/ features, K-Means k=6: ARI >= 0.9 against the truth."""
    features = _features(history, population.end)
    truth = population.truth().set_index("customer_id")["archetype"].reindex(features.index)
    columns = ["recency_days", "orders", "net_spend", "avg_order_value", "tenure_days"]
    columns.append("discount_share")
    X = StandardScaler().fit_transform(np.log1p(features[columns].to_numpy()))
    labels = KMeans(6, n_init=10, random_state=0).fit_predict(X)
    assert adjusted_rand_score(truth, labels) >= 0.9


def test_offline_fit_recovers_the_archetypes():
    """The real offline job (it chooses k itself) on simulated history: ARI >= 0.9."""
    from offline.fit import FitOptions, fit

    pop = make_population(2000, seed=21, end=END)
    history = simulate_history(pop, seed=21)
    result = fit(
        None,
        history.assign(ts=_epoch(history["ts"])),
        FitOptions(algorithms=("kmeans",), n_bootstrap=5),
    )
    truth = pop.truth().set_index("customer_id")["archetype"].reindex(result.customers.index)
    assert adjusted_rand_score(truth, np.asarray(result.labels)) >= 0.9


def test_sigterm_ends_a_real_time_stream_cleanly(tmp_path: Path):
    """SIGTERM sets a stop flag: the run flushes what it has, closes its output, exits 0."""
    out = tmp_path / "stream.jsonl"
    argv = [sys.executable, "-m", "state.cli", "produce", "simulate", "--customers", "200"]
    argv += ["--duration", "1h", "--rate", "200", "--seed", "1", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size > 0):  # the stream has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    lines = out.read_bytes().splitlines()
    assert f"written={len(lines)}".encode() in stdout
    assert all(json.loads(line)["customer_id"].startswith("C") for line in lines)
