"""CheckoutProducer and ``segstream produce`` against a real Kafka-protocol broker."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from producer.client import CheckoutProducer, ProducerOptions
from producer.contract import CheckoutEvent, decode
from producer.simulate import make_population, simulate_stream
from state.cli import main
from state.config import Settings
from state.errors import InvalidEvent

pytestmark = pytest.mark.integration

START = time.time() - 40 * 86_400  # a compressed stream must not run past the consumer's clock


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, client_security: Settings, unique: Any) -> Settings:
    return client_security.replace(
        kafka_bootstrap_servers=kafka_bootstrap, events_topic=unique.topic
    )


def _event(i: int, customer: str = "C1", **changes: Any) -> CheckoutEvent:
    fields = {"event_id": f"e-{i}", "customer_id": customer, "ts": START + i, "amount": 5.0 + i}
    return CheckoutEvent(**{**fields, **changes})


@pytest.fixture
def consume_all(
    make_consumer: Callable[..., Any], poll_records: Callable[..., list[Any]]
) -> Callable[[str, int], list[Any]]:
    """``consume_all(topic, count)``: the records of ``topic`` once ``count`` have arrived
    (no consumer group, so no group-join wait; drained is judged from the data)."""

    def consume(topic: str, count: int) -> list[Any]:
        return poll_records(make_consumer(topic, group_id=None), count)

    return consume


def test_events_are_keyed_by_customer_and_delivered_in_order(
    kafka_settings: Settings,
    create_topic: Callable[..., str],
    consume_all: Callable[[str, int], list[Any]],
) -> None:
    topic = create_topic(kafka_settings.events_topic, partitions=3)
    pop = make_population(2000, seed=1, end=START)  # 300 events span about two days
    events = list(simulate_stream(pop, seed=1, events=300))
    delivered: list[tuple[str, Any]] = []
    with CheckoutProducer(
        kafka_settings,
        options=ProducerOptions(compression_type="gzip"),
        on_delivery=lambda e, md, err: delivered.append((e.event_id, md or err)),
    ) as producer:
        for n, event in enumerate(events):  # objects and plain dicts are both accepted
            producer.send(event if n % 2 else msgspec.structs.asdict(event))
        producer.flush(timeout=30)
        assert (producer.sent, producer.delivered, producer.failed) == (300, 300, 0)
    assert len(delivered) == 300 and all(md.topic == topic for _, md in delivered)

    records = consume_all(topic, 300)
    assert len(records) == 300
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for record in records:
        event = decode(record.value, record.key, now=time.time())
        assert isinstance(event, CheckoutEvent), event
        assert record.key == event.customer_id.encode()
        by_customer[event.customer_id].append((record.partition, record.offset, event.event_id))
    sent_order: dict[str, list[str]] = defaultdict(list)
    for event in events:
        sent_order[event.customer_id].append(event.event_id)
    for customer, seen in by_customer.items():
        assert len({partition for partition, _, _ in seen}) == 1  # one customer, one partition
        assert [eid for _, _, eid in sorted(seen)] == sent_order[customer]  # in order


def test_a_bad_event_raises_at_the_call_site_and_never_reaches_the_topic(
    kafka_settings: Settings,
    create_topic: Callable[..., str],
    consume_all: Callable[[str, int], list[Any]],
) -> None:
    topic = create_topic(kafka_settings.events_topic)
    with CheckoutProducer(kafka_settings) as producer:
        producer.send(_event(1))
        bad = [
            (_event(2, amount=-1.0), "negative:amount"),
            (_event(3, customer="no spaces allowed"), "invalid_customer_id"),
            ({"event_id": "e-4", "customer_id": "C1", "ts": START}, "missing_field:amount"),
            (_event(5, ts=time.time() + 3 * 86_400), "future_ts"),
            (_event(6, items=0), "bad_value:items"),
        ]
        for event, reason in bad:
            with pytest.raises(InvalidEvent) as caught:
                producer.send(event)
            assert caught.value.reason == reason
        producer.send(_event(7))
    assert (producer.sent, producer.delivered, producer.failed) == (2, 2, 0)

    records = consume_all(topic, 2)
    ids = [decode(r.value, r.key).event_id for r in records]  # one partition: e-7 came last
    assert ids == ["e-1", "e-7"]


def test_the_deployment_currency_is_enforced(
    kafka_settings: Settings, create_topic: Callable[..., str]
) -> None:
    create_topic(kafka_settings.events_topic)
    with CheckoutProducer(kafka_settings.replace(currency="EUR")) as producer:
        future = producer.send(_event(1, currency="EUR"))
        with pytest.raises(InvalidEvent, match="USD"):
            producer.send(_event(2, currency="USD"))
        metadata = future.get(timeout=30)
    assert metadata.offset == 0 and producer.sent == 1


def test_connects_lazily_flushes_and_closes(
    kafka_settings: Settings, create_topic: Callable[..., str]
) -> None:
    unreachable = CheckoutProducer(Settings(kafka_bootstrap_servers="127.0.0.1:1"))
    unreachable.flush()  # nothing was sent, nothing connects
    unreachable.close()
    assert unreachable._producer is None

    create_topic(kafka_settings.events_topic)
    producer = CheckoutProducer(kafka_settings, options=ProducerOptions(enable_idempotence=True))
    assert producer._producer is None
    future = producer.send(_event(1))
    assert producer._producer is not None
    producer.flush(timeout=30)
    assert future.is_done and future.succeeded()
    producer.close()
    producer.close()  # twice is harmless
    assert producer._producer is None


def test_cli_simulate_and_replay_produce_to_the_topic(
    kafka_settings: Settings,
    create_topic: Callable[..., str],
    consume_all: Callable[[str, int], list[Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = create_topic(kafka_settings.events_topic)
    broker = [
        "--bootstrap-servers",
        kafka_settings.kafka_bootstrap_servers,
        "--events-topic",
        topic,
    ]
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START))
    simulate = ["produce", "simulate", "--customers", "30", "--events", "50", "--seed", "4"]
    assert main([*simulate, "--start", start, *broker]) == 0
    assert "sent=50 delivered=50 written=0 failed=0" in capsys.readouterr().out

    table = tmp_path / "orders.csv"
    table.write_text("customer_id,trans_date,tran_amount\nR1,01-Jan-24,10\nR2,02-Jan-24,-5\n")
    assert main(["produce", "replay", str(table), "--speed", "1000000", *broker]) == 0
    assert "rejected=1 negative:amount=1" in capsys.readouterr().out

    records = consume_all(topic, 51)
    customers = [decode(r.value, r.key).customer_id for r in records]
    assert len(records) == 51 and customers[-1] == "R1"


def test_the_python_example_of_docs_producing_md_runs(
    kafka_settings: Settings,
    create_topic: Callable[..., str],
    consume_all: Callable[[str, int], list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "producing.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    topic = create_topic(kafka_settings.events_topic)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.kafka_bootstrap_servers)
    monkeypatch.setenv("SEGSTREAM_EVENTS_TOPIC", topic)
    exec(compile(example, "docs/producing.md", "exec"), {})
    assert capsys.readouterr().out == "not sent: negative:amount\n0\n"
    (record,) = consume_all(topic, 1)
    assert decode(record.value, record.key).event_id == "order-10001"
