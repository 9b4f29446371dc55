"""Benchmark of ``segstream consume`` (not a test): throughput, latency, CPU, profile.

Starts its own Tansu broker and ``redis-server`` on free ports (state.devstack) unless
``KAFKA_BOOTSTRAP_SERVERS``/``REDIS_URL`` are set. One run:

1. seeds Redis with a model and ``--customers`` customers, preloads a topic of
   ``--events`` checkout events (~200-byte JSON) on ``--partitions`` partitions;
2. the raw kafka-python consume rate of that topic: default fetch settings, then the
   consumer's fetch settings (the ceiling for this client);
3. the consumer service (in process, one instance): sustained events/s from first to
   last record, CPU seconds per event (``time.process_time``, all threads);
4. the same run under cProfile (fresh group and key prefix): where the CPU goes;
5. a naive one-event-at-a-time loop (read, fold, assign, guarded write per event);
6. the service on a topic shaped like the live load (customers in turn, one event each):
   its sustained rate is the base of the latency shares;
7. event-to-Redis latency at half that sustained rate: a separate producer process paces
   live events (event time = send time) while the service consumes.

Run: ``.venv/bin/python bench/bench_consumer.py [--events 200000] [--customers 20000]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumer.kafka_io import consumer_options
from consumer.metrics import ConsumerMetrics
from consumer.processor import BatchProcessor, SourceRecord, run_step
from consumer.service import ConsumerService
from producer.contract import CheckoutEvent, encode
from state.config import Settings
from state.devstack import RedisServer, TansuBroker
from state.online import OnlineSegmenter
from state.redis_store import RedisStore
from state.registry import ModelRegistry
from tests.consumer_support import World, make_world  # the consumer tests' workload

GROUP_OPTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    with ExitStack() as stack:
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        url = os.environ.get("REDIS_URL")
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-consumer-")))
        if not kafka:
            broker = TansuBroker(workdir=work / "kafka").start()
            stack.callback(broker.stop)
            kafka = broker.bootstrap
        if not url:
            server = RedisServer(workdir=work / "redis").start()
            stack.callback(server.stop)
            url = server.url
        yield kafka, url


def seed(settings: Settings, world: World) -> RedisStore:
    client = redis.Redis.from_url(settings.redis_url)
    registry = ModelRegistry(client, prefix=settings.redis_prefix)
    registry.publish(world.model)
    registry.set_current(world.model.version)
    store = RedisStore(client, prefix=settings.redis_prefix)
    for i in range(0, len(world.seeds), 5000):
        store.put_initial_many(world.seeds[i : i + 5000])
    return store


def preload(settings: Settings, events: list[CheckoutEvent], partitions: int) -> float:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(settings.events_topic, partitions, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=20, batch_size=256 * 1024
    )
    t0 = time.perf_counter()
    for e in events:
        producer.send(settings.events_topic, key=e.customer_id.encode(), value=encode(e))
    producer.flush(120)
    producer.close()
    return len(events) / (time.perf_counter() - t0)


def raw_rate(settings: Settings, n: int, partitions: int, **options: Any) -> float:
    """Records/s of a bare KafkaConsumer (assigned partitions, no group), first to last."""
    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **options)
    c.assign([TopicPartition(settings.events_topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    got, t0 = 0, None
    while got < n:
        for recs in c.poll(timeout_ms=500).values():
            if t0 is None:
                t0 = time.perf_counter()
            got += len(recs)
    rate = got / (time.perf_counter() - (t0 or 0))
    c.close()
    return rate


def like_the_cli() -> None:
    """``segstream consume`` freezes its start-up objects out of the collector's full scans
    (consumer/cli.py); here that keeps the benchmark's own workload (the preloaded events)
    from lengthening the service's garbage collections."""
    gc.collect()
    gc.freeze()


def service_run(settings: Settings, n: int, profile: bool = False) -> tuple[float, float, str]:
    """(events/s, CPU us/event, profile text) of one in-process consumer over the topic."""
    client = redis.Redis.from_url(settings.redis_url)
    model = ModelRegistry(client, prefix=settings.redis_prefix).current()
    if model is None:
        raise SystemExit("no current model")
    seg = OnlineSegmenter.from_model(model, half_life_seconds=settings.online_half_life_seconds)
    service = ConsumerService(
        settings,
        store=RedisStore(client, prefix=settings.redis_prefix),
        processor=BatchProcessor(model, seg),
        metrics=ConsumerMetrics(),
        consumer_overrides=GROUP_OPTS,
    )
    prof = cProfile.Profile() if profile else None
    like_the_cli()
    cpu0 = time.process_time()
    if prof:
        prof.enable()
    summary = service.run(max_events=n, timeout=600)
    if prof:
        prof.disable()
    cpu = time.process_time() - cpu0
    span = (summary.last_record_at or 0) - (summary.first_record_at or 0)
    text = ""
    if prof:
        out = StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        text = out.getvalue()
    return summary.consumed / span, 1e6 * cpu / summary.consumed, text


def cycled_events(ids: list[str], n: int) -> list[CheckoutEvent]:
    """``n`` events shaped like :func:`paced_producer`'s: customers in turn, one event each,
    event times over the last ``n`` ms (none in the future)."""
    t0 = time.time() - n / 1000 - 60
    return [
        CheckoutEvent(event_id=f"cyc{i}", customer_id=ids[i % len(ids)], ts=t0 + i / 1000,
                      amount=20.0)
        for i in range(n)
    ]  # fmt: skip


def naive_rate(settings: Settings, world: World, n: int, partitions: int) -> float:
    """One event at a time: read the customer, fold, assign, one guarded write."""
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisStore(client, prefix=settings.redis_prefix)
    proc = BatchProcessor(
        world.model, OnlineSegmenter.from_model(world.model, half_life_seconds=30 * 86400)
    )
    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, max_poll_records=500)
    c.assign([TopicPartition(settings.events_topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    records: list[SourceRecord] = []
    while len(records) < n:
        for recs in c.poll(timeout_ms=500).values():
            records.extend(SourceRecord.from_kafka(r) for r in recs)
    c.close()
    t0 = time.perf_counter()
    for r in records[:n]:
        run_step([r], store, proc, now=time.time())
    return n / (time.perf_counter() - t0)


def paced_producer(bootstrap: str, topic: str, rate: float, seconds: float, ids: list[str]) -> None:
    """Live events at ``rate``/s, event time = send time, through librdkafka.

    The load generator shares the 2 CPUs with the service, Tansu and Redis, so it must be
    cheap: the bytes are ``encode()``'s for the same event (checked once below), filled
    in by one %-format, and sent by confluent-kafka's C producer (a few us per event;
    kafka-python's producer with ``encode()`` cost ~80 us of CPU per event). The producer's
    ``linger.ms`` is ``BENCH_LINGER_MS`` (default 5, librdkafka's own default).
    """
    from confluent_kafka import Producer

    template = b'{"event_id":"live%d","customer_id":"%s","ts":%r,"amount":20.0,' \
        b'"type":"purchase","discount":0.0,"items":1,"schema_version":1}'  # fmt: skip
    ts = time.time()
    sample = CheckoutEvent(event_id="live0", customer_id=ids[0], ts=ts, amount=20.0)
    assert template % (0, ids[0].encode(), ts) == encode(sample), "template drifted from encode()"
    keys = [cid.encode() for cid in ids]
    linger = int(os.environ.get("BENCH_LINGER_MS", "5"))  # librdkafka's default
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger, "acks": "all"})
    start = time.time()
    i = 0
    while True:
        now = time.time()
        due = int((now - start) * rate)
        if now - start >= seconds:
            break
        while i < due:
            key = keys[i % len(keys)]
            producer.produce(topic, key=key, value=template % (i, key, time.time()))
            i += 1
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)


class _Collect:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def labels(self, source: str) -> Any:
        values = self.values.setdefault(source, [])

        class _Obs:
            def observe(self, v: float) -> None:
                values.append(v)

        return _Obs()


def latency_at(settings: Settings, world: World, rate: float, seconds: float) -> dict[str, Any]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(settings.events_topic, 6, 1)])
    admin.close()
    client = redis.Redis.from_url(settings.redis_url)
    seg = OnlineSegmenter.from_model(world.model, half_life_seconds=30 * 86400)
    metrics = ConsumerMetrics()
    collect = _Collect()
    metrics.latency = collect  # type: ignore[assignment]  # raw values instead of buckets
    service = ConsumerService(
        settings,
        store=RedisStore(client, prefix=settings.redis_prefix),
        processor=BatchProcessor(world.model, seg),
        metrics=metrics,
        consumer_overrides=GROUP_OPTS,
    )
    ids = [s.customer_id for s in world.seeds]
    feeder = mp.Process(
        target=paced_producer,
        args=(settings.kafka_bootstrap_servers, settings.events_topic, rate, seconds, ids),
    )
    like_the_cli()
    t = threading.Thread(target=lambda: service.run(idle_timeout=3, timeout=seconds + 60))
    t.start()
    deadline = time.monotonic() + 60  # the load starts once the group join is done
    while not service.kafka.assignment() and time.monotonic() < deadline:
        time.sleep(0.05)
    feeder.start()
    feeder.join()
    t.join()
    out = {}
    for source, values in collect.values.items():
        q = statistics.quantiles(values, n=100)
        out[source] = (len(values), q[49] * 1000, q[98] * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--naive", type=int, default=5_000)
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument(
        "--latency-shares", type=float, nargs="+", default=[0.5, 0.25, 0.1],
        help="live loads as shares of the sustained rate",
    )  # fmt: skip
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    world = make_world(customers=args.customers, events=args.events, seed=5)
    print(f"workload: {len(world.seeds)} seeded customers, {len(world.stream)} events, "
          f"{len(encode(world.stream[0]))} bytes/event")  # fmt: skip
    with servers() as (kafka, url):
        base = Settings.from_env({}, kafka_bootstrap_servers=kafka, redis_url=url)
        s1 = base.replace(events_topic="bench-events", group_id="bench-1", redis_prefix="b1")
        seed(s1, world)
        print(f"preload: {preload(s1, world.stream, args.partitions):,.0f} events/s produced")
        n = len(world.stream)
        r_default = raw_rate(s1, n, args.partitions)
        tuned = {
            k: v
            for k, v in consumer_options(s1).items()
            if k
            in (
                "max_partition_fetch_bytes",
                "fetch_max_bytes",
                "fetch_max_wait_ms",
                "max_poll_records",
                "check_crcs",
            )
        }
        r_tuned = raw_rate(s1, n, args.partitions, **tuned)
        print(f"raw kafka-python, default fetch settings: {r_default:,.0f} records/s")
        print(f"raw kafka-python, consumer fetch settings {tuned}: {r_tuned:,.0f} records/s")
        rate, cpu, _ = service_run(s1, n)
        print(f"consumer service: {rate:,.0f} events/s ({rate / r_tuned:.0%} of raw), "
              f"{cpu:.1f} CPU us/event")  # fmt: skip
        s2 = s1.replace(group_id="bench-2", redis_prefix="b2")
        seed(s2, world)
        prate, pcpu, text = service_run(s2, n, profile=True)
        print(f"under cProfile: {prate:,.0f} events/s, {pcpu:.1f} CPU us/event; top by own time:")
        print(text)
        s3 = s1.replace(redis_prefix="b3")
        seed(s3, world)
        naive = naive_rate(s3, world, args.naive, args.partitions)
        print(f"naive one-event-at-a-time: {naive:,.0f} events/s (batched is {rate / naive:.1f}x)")
        # The live load cycles through the customers, one event each per lap: fewer events
        # per customer per batch than the preloaded workload, so more work per event. The
        # latency shares are of the sustained rate on that same shape, measured here.
        s5 = base.replace(events_topic="bench-cycled", group_id="bench-5", redis_prefix="b5")
        seed(s5, world)
        cycled = cycled_events([s.customer_id for s in world.seeds], n)
        preload(s5, cycled, args.partitions)
        live_rate, live_cpu, _ = service_run(s5, n)
        print(f"consumer service, the live load's shape (one event per customer per lap): "
              f"{live_rate:,.0f} events/s, {live_cpu:.1f} CPU us/event")  # fmt: skip
        for k, share in enumerate(args.latency_shares):
            s4 = base.replace(
                events_topic=f"bench-live-{k}", group_id=f"bench-4-{k}", redis_prefix=f"b4{k}"
            )
            seed(s4, world)
            load = live_rate * share
            lat = latency_at(s4, world, load, args.latency_seconds)
            for source, (count, p50, p99) in lat.items():
                print(f"latency at {load:,.0f} events/s ({share:.0%} of sustained) from "
                      f"{source} time: samples={count} p50={p50:.1f} ms p99={p99:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
