"""The consumer's Kafka edge: one thin wrapper over kafka-python's consumer, producer, admin.

Connects on first use, closes as a context manager. The consumer is in a group with
manual commits only (``enable_auto_commit=False``): offsets move when the service
says its batch is written. Fetch defaults are the measured ones of docs/benchmarks.md
(``max_partition_fetch_bytes`` 4 MiB, ``fetch_max_bytes`` 64 MiB, ``max_poll_records``
from the settings); CRC checks stay on (``crc32c`` makes them cheap).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from consumer.records import DeadLetter, SegmentChange
from state.config import Settings

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
FETCH_DEFAULTS: dict[str, Any] = {
    "max_partition_fetch_bytes": 4 * MiB,
    "fetch_max_bytes": 64 * MiB,
    "check_crcs": True,
}


def consumer_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """kafka-python consumer options for the service (``overrides`` win)."""
    return {
        **settings.kafka_client_options(),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "max_poll_records": settings.max_poll_records,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "client_id": "segstream-consumer",
        **FETCH_DEFAULTS,
        **overrides,
    }


def _log_commit_failure(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        logger.warning("async commit failed error=%r", str(response))


#: What the service's revoke hook returns: ``{(topic, partition): next offset}`` to commit.
Offsets = dict[tuple[str, int], int]


class _Listener(AsyncConsumerRebalanceListener):
    """Rebalance hooks. kafka-python 3 runs them on its IO thread, where a blocking commit
    fails ("Cannot block on net.run() from the IO thread itself"), so they are coroutines:
    the revoke hook flushes what the service produced (a plain thread wait, not the consumer's
    loop) and returns the offsets to commit, which are then *awaited* here before the
    partitions go, so the next owner starts exactly after what this instance wrote.
    """

    def __init__(
        self,
        io: KafkaIO,
        on_revoked: Callable[[set[TopicPartition]], Offsets],
        on_assigned: Callable[[set[TopicPartition]], None],
    ) -> None:
        self._io = io
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        offsets = self._on_revoked(set(revoked))
        if offsets:
            coordinator = self._io.consumer._coordinator
            try:  # the awaitable behind KafkaConsumer.commit() (retries, coordinator lookup)
                await coordinator._commit_offsets_sync_async(_offsets_and_metadata(offsets))
                logger.info("committed on revoke offsets=%s", _describe(offsets))
            except Exception as exc:  # the guard makes the next owner's replay harmless
                logger.warning("commit on revoke failed error=%r", str(exc))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._on_assigned(set(assigned))


def _offsets_and_metadata(offsets: Mapping[tuple[str, int], int]) -> dict[Any, Any]:
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


def _describe(offsets: Mapping[tuple[str, int], int]) -> str:
    return ",".join(f"{t}/{p}@{o}" for (t, p), o in sorted(offsets.items()))


class KafkaIO:
    """Consumer (group, manual commit), producer (DLQ, changes) and topic creation."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_revoked: Callable[[set[TopicPartition]], Offsets] = lambda _: {},
        on_assigned: Callable[[set[TopicPartition]], None] = lambda _: None,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._overrides = dict(consumer_overrides or {})
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None

    # -- lazy clients -------------------------------------------------------------------------

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(**consumer_options(self.settings, **self._overrides))
            self._consumer.subscribe(
                [self.settings.events_topic],
                listener=_Listener(self, self._on_revoked, self._on_assigned),
            )
        return self._consumer

    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **self.settings.kafka_client_options(),
                acks="all",
                linger_ms=5,
                client_id="segstream-consumer-out",
            )
        return self._producer

    def ensure_topics(self) -> list[str]:
        """Create the events, DLQ and changes topics if missing; return those created."""
        s = self.settings
        admin = KafkaAdminClient(**s.kafka_client_options(), client_id="segstream-admin")
        created = []
        try:
            existing = set(admin.list_topics())
            for name in dict.fromkeys((s.events_topic, s.dlq_topic, s.changes_topic)):
                if name in existing:
                    continue
                try:
                    admin.create_topics(
                        [NewTopic(name, num_partitions=s.topic_partitions, replication_factor=1)]
                    )
                    created.append(name)
                except TopicAlreadyExistsError:  # another instance won the race
                    pass
        finally:
            admin.close()
        if created:
            logger.info(
                "topics created names=%s partitions=%d", ",".join(created), s.topic_partitions
            )
        return created

    # -- consuming ----------------------------------------------------------------------------

    def poll(self, timeout_ms: int) -> list[Any]:
        """One poll; records of each partition in offset order, partitions one after another."""
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        return [r for records in batches.values() for r in records]

    def commit(self, offsets: Mapping[tuple[str, int], int], *, sync: bool = True) -> None:
        """Commit ``{(topic, partition): next offset to read}``; ``sync=False`` does not wait
        (a failure is logged: the next commit, or a redelivery the guard skips, covers it)."""
        if not offsets:
            return
        tps = _offsets_and_metadata(offsets)
        if sync:
            self.consumer.commit(tps)
        else:
            self.consumer.commit_async(tps, callback=_log_commit_failure)

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment()) if self._consumer is not None else set()

    def pause_all(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume_all(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: highwater minus position (as the client last saw it)."""
        out = {}
        c = self.consumer
        for tp in c.assignment():
            high = c.highwater(tp)
            if high is None:
                continue
            try:
                out[tp] = max(high - c.position(tp, timeout_ms=0), 0)
            except Exception:  # position unknown right after an assignment: no sample
                continue
        return out

    # -- producing ----------------------------------------------------------------------------

    def send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for d in letters:
            self.producer.send(
                self.settings.dlq_topic, key=d.record.key, value=d.record.value, headers=d.headers()
            )

    def send_changes(self, changes: Sequence[SegmentChange]) -> None:
        for c in changes:
            self.producer.send(
                self.settings.changes_topic, key=c.customer_id.encode(), value=c.to_json()
            )

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every produced message is acknowledged (raises if not in time)."""
        if self._producer is not None:
            self._producer.flush(timeout=timeout)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None

    def __enter__(self) -> KafkaIO:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
