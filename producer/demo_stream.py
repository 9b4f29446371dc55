"""The demo's live minute: paced simulated checkouts in, a live view out."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live

from producer.demo_view import LiveStats, events_outcome, poll_changes, render, scrape
from state.config import Settings

REFRESH_SECONDS = 0.5
DRAIN_TIMEOUT = 60.0


def stream_live(
    pop: Any, settings: Settings, *, seconds: float, rate: float, seed: int
) -> LiveStats:
    """Stream ``rate`` checkouts/s for ``seconds`` in real time, then wait for the consumer.

    Returns the final figures. Lag is counted exactly: produced minus consumed.
    """
    import redis
    from kafka import KafkaConsumer, TopicPartition

    from producer.client import CheckoutProducer
    from producer.pacing import paced
    from producer.simulate import simulate_stream
    from state.registry import ModelRegistry

    metrics_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    stats = LiveStats()
    rclient = redis.Redis.from_url(settings.redis_url, **settings.redis_client_options())
    registry = ModelRegistry(rclient, prefix=settings.redis_prefix)
    changes = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    wait_ready(metrics_url)
    parts = changes.partitions_for_topic(settings.changes_topic) or {0}
    changes.assign([TopicPartition(settings.changes_topic, p) for p in parts])
    last = [time.monotonic()]

    def refresh(live: Live) -> None:
        now = time.monotonic()
        m = scrape(metrics_url)
        if m:
            stats.update_rate(events_outcome(m, "consumed"), now - last[0])
            stats.applied = events_outcome(m, "applied")
            stats.dead_lettered = events_outcome(m, "dead_lettered")
        view = registry.segments()
        stats.sizes = [(s.id, s.name, s.size) for s in view.segments]
        poll_changes(changes, stats)
        last[0] = now
        live.update(render(stats, seconds=seconds, metrics_url=metrics_url))

    console = Console(stderr=False)
    try:
        with (
            CheckoutProducer(settings) as producer,
            Live(console=console, refresh_per_second=4, transient=False) as live,
        ):
            events = simulate_stream(pop, seed=seed, start=time.time(), duration=seconds, rate=rate)
            for event in paced(events, lambda e: e.ts, speed=1.0):
                producer.send(event)
                stats.sent += 1
                if time.monotonic() - last[0] >= REFRESH_SECONDS:
                    refresh(live)
            producer.flush()
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while stats.consumed < stats.sent and time.monotonic() < deadline:
                time.sleep(REFRESH_SECONDS)
                refresh(live)
            refresh(live)
    finally:
        changes.close()
        rclient.close()
    return stats


def wait_ready(metrics_url: str, timeout: float = 60.0) -> None:
    """Wait until the consumer answers ``/readyz`` (partitions assigned, Redis reachable)."""
    import urllib.request

    ready = metrics_url.replace("/metrics", "/readyz")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(ready, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"consumer not ready after {timeout:.0f} s ({ready})")
