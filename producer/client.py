"""``CheckoutProducer``: the Python library checkout systems use to send checkout events.

Every event is checked against the contract (:func:`producer.contract.validate`)
before it is handed to Kafka, so a bad event raises
:class:`~state.errors.InvalidEvent` at the call site and never reaches the topic.
Messages are keyed by customer id (one customer, one partition, in order), sent
with ``acks=all`` and kafka-python's idempotent producer, retried with backoff.
The Kafka client is created on first use; the producer is a context manager
that flushes and closes on exit.

>>> producer = CheckoutProducer(Settings(), topic="checkout-events")  # nothing connects yet
>>> producer.validate({"event_id": "e-1", "customer_id": "CS1112", "ts": 0, "amount": 9.5}).amount
9.5
>>> producer.validate({"event_id": "e-1", "customer_id": "CS1112", "ts": 0, "amount": -1})
Traceback (most recent call last):
...
state.errors.InvalidEvent: amount must be >= 0, got -1
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import msgspec

from producer.contract import CheckoutEvent, encode, validate
from state.config import Settings
from state.errors import ConfigError, SegstreamError

logger = logging.getLogger(__name__)

#: ``on_delivery(event, metadata, error)``: exactly one of ``metadata`` and ``error`` is set.
DeliveryCallback = Callable[[CheckoutEvent, Any, BaseException | None], None]
EventLike = CheckoutEvent | Mapping[str, Any]
COMPRESSION_TYPES = ("gzip", "snappy", "lz4", "zstd")


class ProduceError(SegstreamError):
    """Events could not be handed to or acknowledged by the broker in time."""


@dataclass(frozen=True, kw_only=True)
class ProducerOptions:
    """Delivery and batching settings of the Kafka producer (kafka-python's names).

    The defaults favour safety, then throughput: ``acks="all"`` with the idempotent
    producer (no duplicates or reordering on retry; tested against Tansu, which supports
    InitProducerId), up to 10 retries 100 ms apart within ``delivery_timeout_ms``, and
    batches that wait up to ``linger_ms`` to fill ``batch_size`` bytes
    (docs/benchmarks.md has the measurements behind these numbers). ``compression_type``
    is ``None`` or one of :data:`COMPRESSION_TYPES` (``gzip`` always works; the others
    need their codec package installed).

    >>> ProducerOptions(compression_type="gzip").kafka_options()["compression_type"]
    'gzip'
    >>> ProducerOptions(compression_type="brotli").kafka_options()
    Traceback (most recent call last):
    ...
    state.errors.ConfigError: compression_type must be one of gzip, snappy, lz4, zstd or None, got 'brotli'
    """

    acks: int | str = "all"
    enable_idempotence: bool = True
    compression_type: str | None = None
    linger_ms: int = 10
    batch_size: int = 256 * 1024
    retries: int = 10
    retry_backoff_ms: int = 100
    delivery_timeout_ms: int = 120_000
    max_block_ms: int = 30_000

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for ``kafka.KafkaProducer`` (checked, codec availability too)."""
        codec = self.compression_type
        if codec is not None and codec not in COMPRESSION_TYPES:
            raise ConfigError(
                f"compression_type must be one of {', '.join(COMPRESSION_TYPES)} or None, "
                f"got {codec!r}"
            )
        if codec is not None:
            import kafka.codec

            if not getattr(kafka.codec, f"has_{codec}")():
                raise ConfigError(f"compression {codec!r} needs its codec package installed")
        if self.enable_idempotence and str(self.acks) not in ("all", "-1"):
            raise ConfigError("the idempotent producer needs acks='all'")
        return asdict(self)


class CheckoutProducer:
    """Validates checkout events and produces them to the events topic, keyed by customer id.

    ``settings`` gives the bootstrap servers, security options, the topic (unless
    ``topic`` is given) and the deployment currency checked on every event.
    ``on_delivery`` is called for every event once the broker acknowledges it (or
    it finally fails), from kafka-python's I/O thread: keep it short.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topic: str | None = None,
        options: ProducerOptions | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.options = options
        self.on_delivery = on_delivery
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        self._producer: Any = None
        self._lock = threading.Lock()

    # -- checking -------------------------------------------------------------------------------

    def validate(self, event: EventLike, *, now: float | None = None) -> CheckoutEvent:
        """The checked event for ``event`` (a :class:`CheckoutEvent` or a mapping of fields).

        Raises :class:`~state.errors.InvalidEvent` (with a ``reason``) when it breaks the
        contract, including a currency other than the deployment's and a ``ts`` more
        than a day in the future.
        """
        fields = msgspec.structs.asdict(event) if isinstance(event, CheckoutEvent) else event
        currency = (self.settings.currency if self.settings else "") or None
        return validate(fields, now=time.time() if now is None else now, currency=currency)

    # -- sending --------------------------------------------------------------------------------

    @property
    def producer(self) -> Any:
        """The underlying ``kafka.KafkaProducer``, created (and connected) on first use."""
        if self._producer is None:
            from kafka import KafkaProducer

            settings = self.settings or Settings.from_env()
            options = (self.options or ProducerOptions()).kafka_options()
            self._producer = KafkaProducer(
                **settings.kafka_client_options(), client_id="segstream-producer", **options
            )
            logger.info(
                "producer connected topic=%s %s",
                self.target_topic,
                " ".join(f"{k}={v}" for k, v in options.items()),
            )
        return self._producer

    @property
    def target_topic(self) -> str:
        """The topic events go to."""
        if self.topic:
            return self.topic
        return (self.settings or Settings.from_env()).events_topic

    def send(self, event: EventLike, *, on_delivery: DeliveryCallback | None = None) -> Any:
        """Validate ``event`` and hand it to Kafka; returns kafka-python's delivery future.

        ``future.get(timeout)`` blocks for the record metadata (topic, partition,
        offset) or raises the delivery error. ``on_delivery`` (or the producer's)
        is called when the outcome is known.
        """
        checked = self.validate(event)
        future = self.producer.send(
            self.target_topic, key=checked.customer_id.encode(), value=encode(checked)
        )
        self.sent += 1
        callback = on_delivery or self.on_delivery
        future.add_callback(self._delivered, checked, callback)
        future.add_errback(self._failed, checked, callback)
        return future

    def send_many(self, events: Iterable[EventLike]) -> int:
        """Send every event of ``events`` (each validated first); returns how many were sent."""
        count = 0
        for event in events:
            self.send(event)
            count += 1
        return count

    def _delivered(
        self, event: CheckoutEvent, callback: DeliveryCallback | None, metadata: Any
    ) -> None:
        with self._lock:
            self.delivered += 1
        if callback is not None:
            callback(event, metadata, None)

    def _failed(
        self, event: CheckoutEvent, callback: DeliveryCallback | None, error: BaseException
    ) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = error
        logger.warning(
            "delivery failed event_id=%s customer_id=%s error=%r",
            event.event_id,
            event.customer_id,
            error,
        )
        if callback is not None:
            callback(event, None, error)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every sent event is acknowledged or failed (no-op before first use).

        Raises :class:`ProduceError` when ``timeout`` seconds pass first.
        """
        if self._producer is None:
            return
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout)
        except KafkaTimeoutError as exc:
            raise ProduceError(f"flush did not finish within {timeout} s") from exc

    def close(self, timeout: float | None = None) -> None:
        """Flush, then close the Kafka client. Safe to call twice."""
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        try:
            producer.flush(timeout=timeout)
        finally:
            producer.close(timeout=timeout)
        logger.info(
            "producer closed sent=%d delivered=%d failed=%d", self.sent, self.delivered, self.failed
        )

    def __enter__(self) -> CheckoutProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
