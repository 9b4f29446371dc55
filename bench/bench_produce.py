"""Producer throughput: ``.venv/bin/python bench/bench_produce.py [--events N] [--bootstrap HOST:PORT]``.

Sends the same ``--events`` simulated checkout events (about 230 bytes of JSON each)
through :class:`producer.client.CheckoutProducer` with several producer settings,
each to a fresh topic, and prints events/s from the first ``send`` to the end of
``flush`` (best and median of ``--repeat`` runs, configurations interleaved), and the
process CPU time per event (both kafka-python threads; it depends less on the machine's
load than wall time does):

* ``kafka-python defaults``: linger_ms=0, batch_size=16 KiB, no compression
  (kafka-python 3 also defaults to acks=all and the idempotent producer);
* ``segstream defaults``: :class:`~producer.client.ProducerOptions` (linger_ms=10,
  batch_size=256 KiB, no compression);
* the segstream defaults with gzip, and without idempotence, to show what each costs;
* ``raw kafka-python``: pre-encoded bytes straight into ``KafkaProducer`` with the
  segstream settings: the ceiling, i.e. what validation and encoding cost.

Without ``--bootstrap`` a private Tansu broker is started (``state.devstack``) and
stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from producer.client import CheckoutProducer, ProducerOptions
from producer.contract import CheckoutEvent, encode
from producer.simulate import make_population, simulate_stream
from state.config import Settings

KAFKA_PYTHON_DEFAULTS = ProducerOptions(linger_ms=0, batch_size=16_384)
CONFIGS: dict[str, ProducerOptions] = {
    "kafka-python defaults": KAFKA_PYTHON_DEFAULTS,
    "segstream defaults": ProducerOptions(),
    "segstream + gzip": ProducerOptions(compression_type="gzip"),
    "segstream, no idempotence": ProducerOptions(enable_idempotence=False),
}


def make_events(count: int) -> list[CheckoutEvent]:
    """``count`` simulated events of 10,000 customers (weeks of event time, a year ago)."""
    pop = make_population(10_000, seed=1, end=time.time() - 365 * 86_400)
    return list(simulate_stream(pop, seed=1, events=count))


def _topic(admin: Any, partitions: int) -> str:
    from kafka.admin import NewTopic

    name = f"bench-produce-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    deadline = time.monotonic() + 10
    while name not in admin.list_topics():
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} not listed")
        time.sleep(0.05)
    return name


def run_checkout_producer(
    settings: Settings, topic: str, options: ProducerOptions, events: list[CheckoutEvent]
) -> tuple[float, float]:
    producer = CheckoutProducer(settings, topic=topic, options=options)
    producer.producer  # connect before the clock starts  # noqa: B018
    start, cpu = time.perf_counter(), time.process_time()
    for event in events:
        producer.send(event)
    producer.flush()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = producer.failed
    producer.close()
    if failed:
        raise RuntimeError(f"{failed} deliveries failed")
    return len(events) / elapsed, cpu / len(events) * 1e6


def run_raw(
    settings: Settings, topic: str, options: ProducerOptions, events: list[CheckoutEvent]
) -> tuple[float, float]:
    from kafka import KafkaProducer

    messages = [(e.customer_id.encode(), encode(e)) for e in events]
    producer = KafkaProducer(**settings.kafka_client_options(), **options.kafka_options())
    start, cpu = time.perf_counter(), time.process_time()
    for key, value in messages:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    producer.close()
    return len(events) / elapsed, cpu / len(events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a private Tansu)")
    args = parser.parse_args()

    broker = None
    if args.bootstrap is None:
        from state.devstack import TansuBroker

        broker = TansuBroker(workdir=Path(tempfile.mkdtemp(prefix="bench-produce-"))).start()
        bootstrap = broker.bootstrap
    else:
        bootstrap = args.bootstrap
    try:
        from kafka import KafkaAdminClient

        settings = Settings(kafka_bootstrap_servers=bootstrap)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        events = make_events(args.events)
        size = statistics.mean(len(encode(e)) for e in events[:1000])
        print(
            f"# {args.events} events of ~{size:.0f} B, {args.partitions} partitions, "
            f"broker={'tansu (local)' if broker else bootstrap}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cpus, python {platform.python_version()}, "
            f"load average before {os.getloadavg()[0]:.1f}"
        )
        runners: list[tuple[str, Callable[..., tuple[float, float]], ProducerOptions]] = [
            (name, run_checkout_producer, opts) for name, opts in CONFIGS.items()
        ]
        runners.append(("raw kafka-python (segstream settings)", run_raw, ProducerOptions()))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in runners}
        for _ in range(args.repeat):
            for name, runner, opts in runners:
                results[name].append(runner(settings, _topic(admin, args.partitions), opts, events))
        admin.close()
        print(f"# load average after {os.getloadavg()[0]:.1f}")
        print(f"{'configuration':40} {'best ev/s':>10} {'median ev/s':>12} {'CPU us/ev':>10}")
        for name, runs in results.items():
            rates = [rate for rate, _ in runs]
            cpu = statistics.median(c for _, c in runs)
            print(f"{name:40} {max(rates):>10,.0f} {statistics.median(rates):>12,.0f} {cpu:>10.0f}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
