"""A newly published model is picked up by a running consumer within one sync interval."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis
from kafka import KafkaAdminClient

from consumer.metrics import ConsumerMetrics
from consumer.model_sync import ModelSync
from consumer.service import ConsumerService, RunSummary
from state.config import Settings
from state.devstack import wait_until
from state.model import SegmentModel
from state.redis_store import RedisStore
from state.registry import ModelRegistry
from tests.conftest import CONSUMER_GROUP_OPTIONS
from tests.consumer_support import World, assert_same_state, expected_states, make_world
from tests.integration.test_consumer_e2e import keyed, produce, publish
from tests.integration.test_consumer_process import committed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=400, events=4000, seed=41)


def next_model(model: SegmentModel) -> SegmentModel:
    """Version m2: the same segments (stable ids) with the centroids shifted around."""
    shifted = (*model.centroids[1:], model.centroids[0])
    return SegmentModel.from_dict(
        {**model.to_dict(), "version": "m2", "centroids": [list(c) for c in shifted]}
    )


def test_new_model_is_used_without_restart_and_changes_say_new_model(
    settings: Settings, world: World, create_topic: Callable[..., str]
) -> None:
    settings = settings.replace(max_poll_records=300)
    create_topic(settings.events_topic, 2)
    store = publish(settings, world)
    client = redis.Redis.from_url(settings.redis_url)
    sync = ModelSync(
        client, prefix=settings.redis_prefix, half_life_seconds=86400.0, interval_seconds=0.5
    )
    service = ConsumerService(
        settings,
        store=RedisStore(client, prefix=settings.redis_prefix),
        processor=sync.initial(),
        metrics=ConsumerMetrics(),
        model_source=sync,
        consumer_overrides=CONSUMER_GROUP_OPTIONS,
    )
    half = len(world.stream) // 2
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    out: list[RunSummary] = []
    thread = threading.Thread(target=lambda: out.append(service.run(idle_timeout=5, timeout=120)))
    try:
        thread.start()
        produce(settings, keyed(world.stream[:half]))
        assert wait_until(lambda: committed(admin, settings.group_id) >= half, 60, 0.01)
        m2 = next_model(world.model)
        registry = ModelRegistry(client, prefix=settings.redis_prefix)
        registry.publish(m2)
        registry.set_current("m2")
        assert wait_until(lambda: service.processor.model.version == "m2", 10, 0.01)
        produce(settings, keyed(world.stream[half:]))
        thread.join(120)
    finally:
        service.request_stop()
        admin.close()
    (summary,) = out
    assert summary.applied == len(world.stream)
    assert_redis_equals_batch_any_model(store, world)
    late = {e.customer_id for e in world.stream[half:]}
    stored = store.get_many(sorted(late))
    assert {s.model_version for s in stored.values() if s is not None} == {"m2"}
    total_new_model = sum(
        s.value
        for metric in service.metrics.registry.collect()
        if metric.name == "segstream_segment_changes"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels.get("reason") == "new_model"
    )
    assert total_new_model > 0


def assert_redis_equals_batch_any_model(store: RedisStore, world: World) -> None:
    """Every customer's state equals the batch computation (whatever model assigned it)."""
    want = expected_states(world, world.stream)
    got = store.get_many(list(want))
    for cid, state in want.items():
        stored = got[cid]
        assert stored is not None, cid
        assert_same_state(stored.state, state, cid)
