"""The consumer end to end on a real broker and Redis: state equals the batch computation."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
from kafka import KafkaProducer
from msgspec.structs import replace

from consumer.metrics import ConsumerMetrics
from consumer.model_sync import ModelSync
from consumer.service import ConsumerService, RunSummary
from producer.contract import CheckoutEvent, encode
from state.config import Settings
from state.redis_store import RedisStore
from state.registry import ModelRegistry
from tests.conftest import CONSUMER_GROUP_OPTIONS
from tests.consumer_support import END, World, assert_same_state, expected_states, make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=300, events=3000, seed=11)


def publish(settings: Settings, world: World) -> RedisStore:
    """What `segstream offline publish` leaves in Redis: the model, current, the seeds."""
    client = redis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, prefix=settings.redis_prefix)
    registry.publish(world.model)
    registry.set_current(world.model.version)
    store = RedisStore(client, prefix=settings.redis_prefix)
    store.put_initial_many(world.seeds)
    return store


def produce(settings: Settings, values: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    for key, value in values:
        producer.send(settings.events_topic, key=key, value=value)
    producer.flush(30)
    producer.close()


def keyed(events: Sequence[CheckoutEvent]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e.customer_id.encode(), encode(e)) for e in events]


def consume(
    settings: Settings, store: RedisStore, **run: Any
) -> tuple[RunSummary, ConsumerService]:
    client = redis.Redis.from_url(settings.redis_url)
    sync = ModelSync(
        client,
        prefix=settings.redis_prefix,
        half_life_seconds=float(settings.online_half_life_seconds),
        interval_seconds=1.0,
    )
    service = ConsumerService(
        settings,
        store=store,
        processor=sync.initial(),
        metrics=ConsumerMetrics(),
        model_source=sync,
        consumer_overrides=CONSUMER_GROUP_OPTIONS,
    )
    summary = service.run(**run)
    client.close()
    return summary, service


def assert_redis_equals_batch(store: RedisStore, world: World, stream: list[CheckoutEvent]) -> None:
    want = expected_states(world, stream)
    got = store.get_many(list(want))
    for cid, state in want.items():
        stored = got[cid]
        assert stored is not None, cid
        assert_same_state(stored.state, state, cid)
        assert stored.model_version == world.model.version
        assert stored.segment_id in {s.id for s in world.model.segments}


def test_stream_state_equals_batch_and_a_replay_is_skipped(
    settings: Settings,
    world: World,
    create_topic: Callable[..., str],
    make_consumer: Callable[..., Any],
    poll_records: Callable[..., list[Any]],
    kafka_admin: Any,
) -> None:
    settings = settings.replace(max_poll_records=500)
    create_topic(settings.events_topic, 3)
    store = publish(settings, world)
    produce(settings, keyed(world.stream))

    first, _ = consume(settings, store, max_events=len(world.stream), timeout=90)
    assert first.consumed == len(world.stream) and first.applied == len(world.stream)
    assert first.dead_lettered == 0
    assert_redis_equals_batch(store, world, world.stream)
    before = {c.customer_id: store.raw_fields(c.customer_id) for c in world.seeds}

    # missing topics were created with the configured partition count
    (described,) = kafka_admin.describe_topics([settings.changes_topic])
    assert len(described["partitions"]) == settings.topic_partitions
    # one segment-change event per real change, keyed by customer, matching Redis
    reader = make_consumer(settings.changes_topic, group_id=settings.group_id + "-changes")
    changes = poll_records(reader, first.changes, timeout=30)
    assert len(changes) == first.changes > 0
    final = store.get_many([r.key.decode() for r in changes])
    last: dict[str, dict[str, Any]] = {}
    for r in changes:
        body = json.loads(r.value)
        assert r.key.decode() == body["customer_id"]
        assert body["previous_segment_id"] != body["segment_id"]
        assert body["reason"] in ("purchase", "refund") and body["model_version"] == "m1"
        last[body["customer_id"]] = body
    for cid, body in last.items():  # the latest change per customer is the stored segment
        assert final[cid].segment_id == body["segment_id"]

    # the whole topic again under a new group: every event is a duplicate, nothing moves
    again, _ = consume(
        settings.replace(group_id=settings.group_id + "-replay"),
        store,
        max_events=len(world.stream),
        timeout=90,
    )
    assert again.duplicates == len(world.stream) and again.applied == 0 and again.changes == 0
    assert {c.customer_id: store.raw_fields(c.customer_id) for c in world.seeds} == before


def test_bad_messages_are_dead_lettered_and_good_ones_applied(
    settings: Settings,
    world: World,
    create_topic: Callable[..., str],
    make_consumer: Callable[..., Any],
    poll_records: Callable[..., list[Any]],
) -> None:
    create_topic(settings.events_topic, 2)
    store = publish(settings, world)
    stream = world.stream[:600]
    values = keyed(stream)
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"C000001", b"{broken"),
        (b"C000002", b"[]"),
        (None, encode(stream[0])),  # no key
        (b"C000003", encode(replace(stream[1], customer_id="C000004"))),  # key mismatch
        (b"C000005", json.dumps({"event_id": "x", "customer_id": "C000005", "ts": 1}).encode()),
        (
            b"C000006",
            json.dumps(
                {"event_id": "n", "customer_id": "C000006", "ts": END + 9, "amount": -1}
            ).encode(),
        ),
        (b"C000007", b"\xff\xfe"),
    ]
    mixed = []
    for i, v in enumerate(values):  # bad ones spread among the good
        mixed.append(v)
        if i % 80 == 0 and bad:
            mixed.append(bad.pop(0))
    mixed += bad
    produce(settings, mixed)
    n_bad = 7
    summary, _ = consume(settings, store, max_events=len(mixed), timeout=90)
    assert summary.dead_lettered == n_bad and summary.applied == len(stream)
    assert_redis_equals_batch(store, world, stream)

    dlq = make_consumer(settings.dlq_topic, group_id=settings.group_id + "-dlq-reader")
    letters = poll_records(dlq, n_bad, timeout=30)
    assert len(letters) == n_bad
    for rec in letters:
        headers = {k: v.decode() for k, v in rec.headers}
        assert headers["reason"] and headers["source_topic"] == settings.events_topic
        assert int(headers["source_partition"]) in (0, 1) and int(headers["source_offset"]) >= 0
    reasons = sorted({dict(r.headers)["reason"].decode() for r in letters})
    assert "invalid_json" in reasons and "key_mismatch" in reasons and "missing_key" in reasons
    originals = {v for _, v in mixed}
    assert all(r.value in originals for r in letters)  # the original bytes
