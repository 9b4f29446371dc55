"""Checkout events through a real broker: produce with kafka-python, consume in a group."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from producer.contract import CheckoutEvent, Rejection, decode, encode

pytestmark = pytest.mark.integration


def _event(i: int, customer: str = "cust-1") -> CheckoutEvent:
    return CheckoutEvent(
        event_id=f"ev-{i}",
        customer_id=customer,
        ts=1_700_000_000.0 + i,
        amount=10.0 + i,
        discount=1.5,
        items=2,
        category="books",
        channel="web",
        currency="EUR",
    )


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=10)
    finally:
        producer.close()


def test_checkout_event_round_trips_through_a_consumer_group(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    make_consumer: Callable[..., Any],
    poll_records: Callable[..., list[Any]],
    unique: Any,
) -> None:
    topic = create_topic(unique.topic)
    sent = _event(1)
    _produce(kafka_bootstrap, topic, [(b"cust-1", encode(sent)), (b"cust-1", b"{not json")])

    consumer = make_consumer(topic, group_id=unique.group)
    records = poll_records(consumer, 2)
    consumer.commit()

    now = time.time()
    decoded = [decode(r.value, r.key, now=now) for r in records]
    assert decoded[0] == sent
    assert isinstance(decoded[1], Rejection) and decoded[1].reason == "invalid_json"
    assert records[0].key == b"cust-1"
    assert consumer.committed(TopicPartition(topic, 0)) == 2


def test_committed_offset_survives_a_consumer_restart(
    kafka_bootstrap: str,
    create_topic: Callable[..., str],
    make_consumer: Callable[..., Any],
    poll_records: Callable[..., list[Any]],
    unique: Any,
) -> None:
    topic = create_topic(unique.topic)
    events = [_event(i) for i in range(6)]
    _produce(kafka_bootstrap, topic, [(b"cust-1", encode(e)) for e in events])
    tp = TopicPartition(topic, 0)

    first = make_consumer(topic, group_id=unique.group)
    seen = poll_records(first, 3)[:3]  # process three, commit after the third
    first.commit({tp: OffsetAndMetadata(seen[-1].offset + 1, "", -1)})
    first.close(autocommit=False)

    restarted = make_consumer(topic, group_id=unique.group)
    rest = poll_records(restarted, 3)
    assert [r.offset for r in rest] == [3, 4, 5]
    assert [decode(r.value, r.key) for r in rest] == events[3:]
