"""Faults and scale-out: Redis restarted mid-stream; two consumers, a rebalance, one model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from kafka import KafkaAdminClient, KafkaProducer

from consumer.metrics import ConsumerMetrics
from consumer.model_sync import ModelSync
from consumer.service import ConsumerService, RunSummary
from producer.contract import encode
from state.config import Settings
from state.devstack import RedisServer, wait_until
from state.redis_store import RedisStore
from tests.conftest import CONSUMER_GROUP_OPTIONS
from tests.consumer_support import World, make_world
from tests.integration.test_consumer_e2e import assert_redis_equals_batch, keyed, produce, publish
from tests.integration.test_consumer_process import committed

pytestmark = pytest.mark.integration


class PersistentRedis(RedisServer):
    """A private redis-server that keeps its data across a restart (AOF, fsync always)."""

    def argv(self) -> list[str]:
        argv = super().argv()
        i = argv.index("--appendonly")
        argv[i + 1] = "yes"
        return [*argv, "--appendfsync", "always"]


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    server = PersistentRedis(workdir=tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=1000, events=12_000, seed=31)


def service_for(settings: Settings, interval: float = 1.0) -> tuple[ConsumerService, ModelSync]:
    client = redis.Redis.from_url(settings.redis_url)
    sync = ModelSync(
        client,
        prefix=settings.redis_prefix,
        half_life_seconds=float(settings.online_half_life_seconds),
        interval_seconds=interval,
    )
    service = ConsumerService(
        settings,
        store=RedisStore(client, prefix=settings.redis_prefix),
        processor=sync.initial(),
        metrics=ConsumerMetrics(),
        model_source=sync,
        consumer_overrides=CONSUMER_GROUP_OPTIONS,
    )
    return service, sync


def in_thread(fn: Callable[[], RunSummary]) -> tuple[threading.Thread, list[RunSummary]]:
    out: list[RunSummary] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_redis_restarted_mid_stream_pauses_then_resumes_with_state_equal(
    settings: Settings,
    world: World,
    persistent_redis: PersistentRedis,
    create_topic: Callable[..., str],
) -> None:
    settings = settings.replace(redis_url=persistent_redis.url, max_poll_records=300)
    create_topic(settings.events_topic, 3)
    store = publish(settings, world)
    produce(settings, keyed(world.stream))
    total = len(world.stream)
    service, _ = service_for(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        thread, result = in_thread(lambda: service.run(max_events=total, timeout=120))
        assert wait_until(lambda: committed(admin, settings.group_id) >= total // 5, 60, 0.01)
        persistent_redis.stop()
        retries = service.metrics.retries.labels(cause="store")
        assert wait_until(lambda: retries._value.get() >= 2, 30, 0.02)  # paused and retrying
        stalled = committed(admin, settings.group_id)
        assert stalled < total
        assert committed(admin, settings.group_id) == stalled  # nothing committed while down
        persistent_redis.start()
        thread.join(120)
        assert not thread.is_alive()
    finally:
        service.request_stop()
        admin.close()
    (summary,) = result
    assert summary.store_retries >= 2 and summary.consumed == total
    assert service.metrics.pauses._value.get() >= 1
    assert_redis_equals_batch(store, world, world.stream)


def test_two_consumers_rebalance_mid_stream_and_share_one_model(
    settings: Settings,
    world: World,
    create_topic: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="consumer")
    settings = settings.replace(max_poll_records=200)
    create_topic(settings.events_topic, 4)
    store = publish(settings, world)
    total = len(world.stream)
    a, sync_a = service_for(settings)
    b, sync_b = service_for(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    sent = 0

    def feed(upto: int) -> None:
        """Produce in chunks of 300, each once the group has nearly caught up (no sleeps)."""
        nonlocal sent
        while sent < upto:
            for e in world.stream[sent : min(sent + 300, upto)]:
                producer.send(settings.events_topic, key=e.customer_id.encode(), value=encode(e))
            sent = min(sent + 300, upto)
            producer.flush(30)
            target = sent - 600
            assert wait_until(lambda t=target: committed(admin, settings.group_id) >= t, 60, 0.01)

    try:
        thread_a, res_a = in_thread(lambda: a.run(idle_timeout=6, timeout=150))
        feed(3000)  # A alone
        thread_b, res_b = in_thread(lambda: b.run(idle_timeout=6, timeout=150))
        feed(total - 3000)  # B joins while the stream flows: a rebalance mid-stream
        assert wait_until(lambda: bool(b.kafka.assignment()), 60, 0.01)
        feed(total)  # the last 3,000 events after B has partitions
        thread_a.join(160)
        thread_b.join(160)
        final_commit = committed(admin, settings.group_id)
    finally:
        a.request_stop()
        b.request_stop()
        producer.close()
        admin.close()
    (sa,), (sb,) = res_a, res_b
    assert sa.consumed > 0 and sb.consumed > 0  # both owned partitions
    assert sa.applied + sb.applied == total  # redelivered records after the rebalance: skipped
    assert final_commit == total
    assert_redis_equals_batch(store, world, world.stream)
    # the rebalance checkpoint ran: flushed, then committed before the partitions went
    assert "committed on revoke" in caplog.text
    assert "revoke failed" not in caplog.text

    # one shared model: after a sync round both instances assign with the same centroids
    pa = sync_a.maybe_sync(a.processor, force=True)
    pb = sync_b.maybe_sync(b.processor, force=True)
    pa = sync_a.maybe_sync(pa, force=True)
    assert np.allclose(pa.segmenter.centroids, pb.segmenter.centroids, rtol=0, atol=1e-12)
    seed = np.asarray(world.model.centroids)
    assert not np.allclose(pa.segmenter.centroids, seed)  # it did learn from the stream
