"""The consumer's metrics, in one bundle with an injectable registry, and its HTTP endpoints.

Nothing here is module-global: each :class:`ConsumerMetrics` owns its collectors in the
registry it is given (a fresh one by default), so tests and several services in one
process never collide. :class:`HealthServer` serves ``/metrics``, ``/healthz`` (the
process is alive) and ``/readyz`` (partitions assigned and Redis reachable).

>>> m = ConsumerMetrics()
>>> m.events.labels(outcome="applied").inc(3)
>>> m.registry.get_sample_value("segstream_events_total", {"outcome": "applied"})
3.0
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from state.store import (
    CustomerSeed,
    CustomerStore,
    CustomerUpdate,
    SeedColumns,
    StoredCustomer,
    WriteResult,
)

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60,
)  # fmt: skip


class ConsumerMetrics:
    """Every metric of ``segstream consume`` (names start with ``segstream_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "segstream_events",
            "Events by outcome: consumed, applied, duplicate, dead_lettered",
            ["outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "segstream_dead_letters", "Dead-lettered messages by reason", ["reason"], registry=r
        )
        self.batch_seconds = Histogram(
            "segstream_batch_seconds", "Processing time of one batch", registry=r
        )
        self.batch_size = Histogram(
            "segstream_batch_records",
            "Records per batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.latency = Histogram(
            "segstream_event_to_redis_seconds",
            "From event time (source=event) or broker timestamp (source=broker) to the write",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "segstream_consumer_lag",
            "Records behind per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.redis_seconds = Histogram(
            "segstream_redis_seconds", "Redis round trips of a batch", ["op"], registry=r
        )
        self.segment_size = Gauge(
            "segstream_segment_size", "Live customers per segment", ["segment_id"], registry=r
        )
        self.segment_changes = Counter(
            "segstream_segment_changes",
            "Customers changing segment",
            ["from_segment", "to_segment", "reason"],
            registry=r,
        )
        self.model_version = Gauge(
            "segstream_model_info", "Model version in use (value 1)", ["version"], registry=r
        )
        self.model_sync_age = Gauge(
            "segstream_model_sync_age_seconds",
            "Seconds since the last shared-model sync",
            registry=r,
        )
        self.retries = Counter(
            "segstream_retries", "Retried batches by cause", ["cause"], registry=r
        )
        self.pauses = Counter("segstream_pauses", "Times consumption was paused", registry=r)
        self.assigned = Gauge(
            "segstream_assigned_partitions", "Partitions assigned to this instance", registry=r
        )

    def set_model(self, version: str) -> None:
        """Show ``version`` as the one model in use."""
        self.model_version.clear()
        self.model_version.labels(version=version).set(1)


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread (port 0: any free port)."""

    def __init__(
        self,
        metrics: ConsumerMetrics,
        ready: Callable[[], tuple[bool, str]],
        *,
        host: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        handler = _handler(self.metrics.registry, self.ready)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="health", daemon=True).start()
        logger.info("metrics listening port=%d", self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _handler(
    registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._send(200, b"ok\n")
            elif self.path == "/readyz":
                ok, detail = ready()
                self._send(200 if ok else 503, f"{detail}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet access log
            logger.debug("http " + format, *args)

    return Handler


class TimedStore(CustomerStore):
    """A :class:`CustomerStore` that records each call's round-trip time (``op`` label)."""

    def __init__(self, inner: CustomerStore, metrics: ConsumerMetrics) -> None:
        self.inner = inner
        self._seconds = metrics.redis_seconds

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredCustomer | None]:
        with self._seconds.labels(op="get_many").time():
            return self.inner.get_many(customer_ids)

    def apply_many(self, updates: Sequence[CustomerUpdate]) -> list[WriteResult]:
        with self._seconds.labels(op="apply_many").time():
            return self.inner.apply_many(updates)

    def put_initial_many(self, seeds: Sequence[CustomerSeed]) -> list[WriteResult]:
        return self.inner.put_initial_many(seeds)

    def put_initial_columns(self, columns: SeedColumns) -> list[WriteResult]:
        return self.inner.put_initial_columns(columns)

    def segment_sizes(self) -> dict[int, int]:
        with self._seconds.labels(op="segment_sizes").time():
            return self.inner.segment_sizes()

    def idle_customers(self, before: float, *, limit: int = 1000) -> list[tuple[str, float]]:
        return self.inner.idle_customers(before, limit=limit)

    def close(self) -> None:
        self.inner.close()
