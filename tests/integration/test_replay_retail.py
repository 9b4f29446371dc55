"""A real transaction history, replayed through the real broker and consumer into Redis,
gives the per-customer RFM figures published for it (../shared/data/README.md).

The path is the product's own: ``segstream offline fit`` on the same file gives the model
(published to the registry only, so no customer is seeded and every event counts online),
``segstream produce replay`` sends the 125,000 rows as checkout events, and the consumer
service folds them into Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import redis

from consumer.metrics import ConsumerMetrics
from consumer.model_sync import ModelSync
from consumer.service import ConsumerService
from offline.artifacts import read_model
from state.config import Settings
from state.features import derive
from state.redis_store import RedisStore
from state.registry import ModelRegistry
from tests.conftest import CONSUMER_GROUP_OPTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RETAIL = Path(__file__).resolve().parents[3] / "shared" / "data" / "Retail_Data_Transactions.csv"
ROWS, CUSTOMERS = 125_000, 6_889
SNAPSHOT = datetime(2019, 3, 17, tzinfo=UTC).timestamp()  # last date + 1 day
PUBLISHED = {  # customer: (R days, F transactions, M total amount)
    "CS1112": (62, 15, 1012),
    "CS1113": (36, 20, 1490),
    "CS1114": (33, 19, 1432),
    "CS1115": (12, 22, 1659),
    "CS1116": (204, 13, 857),
}


def segstream(settings: Settings, *args: str) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "REDIS_URL": settings.redis_url,
        "SEGSTREAM_EVENTS_TOPIC": settings.events_topic,
        "SEGSTREAM_REDIS_PREFIX": settings.redis_prefix,
    }
    subprocess.run(
        [sys.executable, "-m", "state.cli", "--log-level", "WARNING", *args],
        env=env,
        check=True,
        timeout=300,
    )


def test_retail_replay_through_broker_and_consumer_gives_the_published_rfm(
    settings: Settings, tmp_path: Path
) -> None:
    fit_dir = tmp_path / "fit"
    segstream(settings, "offline", "fit", "--transactions", str(RETAIL),
              "--date-format", "%d-%b-%y", "--as-of", "2019-03-17", "--k", "2..4",
              "--algorithms", "kmeans", "--bootstrap", "2", "--no-report",
              "--out", str(fit_dir))  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, prefix=settings.redis_prefix)
    model = read_model(fit_dir)
    registry.publish(model)
    registry.set_current(model.version)

    segstream(settings, "produce", "replay", str(RETAIL), "--date-format", "%d-%b-%y",
              "--as-fast-as-possible")  # fmt: skip

    store = RedisStore(client, prefix=settings.redis_prefix)
    sync = ModelSync(
        client,
        prefix=settings.redis_prefix,
        half_life_seconds=float(settings.online_half_life_seconds),
        interval_seconds=float(settings.model_sync_seconds),
    )
    summary = ConsumerService(
        settings,
        store=store,
        processor=sync.initial(),
        metrics=ConsumerMetrics(),
        model_source=sync,
        consumer_overrides=CONSUMER_GROUP_OPTIONS,
    ).run(max_events=ROWS, idle_timeout=15.0)
    assert summary.consumed == ROWS
    assert summary.dead_lettered == 0

    ids = pd.read_csv(RETAIL, usecols=["customer_id"])["customer_id"].unique().tolist()
    assert len(ids) == CUSTOMERS
    stored = {}
    for lo in range(0, len(ids), 1_000):
        stored.update(store.get_many(ids[lo : lo + 1_000]))
    assert all(s is not None for s in stored.values())
    assert sum(s.state.orders for s in stored.values()) == ROWS

    for customer, (r, f, m) in PUBLISHED.items():
        features = derive(stored[customer].state, SNAPSHOT)
        assert (round(features["recency_days"]), features["orders"], features["net_spend"]) == (
            r,
            f,
            m,
        ), customer
    client.close()
