"""The consumer loop: poll, process, write, produce, flush, commit; and the same on exit.

Checkpoint order, on every path (the loop, ``on_partitions_revoked``, shutdown):

1. write state (the batch's guarded ``apply_many``),
2. flush produced messages (dead letters, segment changes),
3. commit offsets (the next offset of each partition of the batch).

A crash between any two steps redelivers the batch; the store's guard makes the
replay harmless. **Redis down**: the batch is not written; consumption pauses, the
write is retried with capped exponential backoff while the group membership is kept
alive by polling paused partitions, nothing is committed, and the online model is
rolled back to before the batch; when Redis answers, the same batch is written and the
partitions resume. If the partitions are revoked meanwhile, the batch is dropped
uncommitted (the new owner re-reads it).

``request_stop()`` (SIGTERM, SIGINT) lets the current batch finish and exits the loop;
:meth:`run` ends with a final checkpoint and closes the clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import TopicPartition
from kafka.errors import KafkaError

from consumer.cache import StateCache
from consumer.kafka_io import KafkaIO
from consumer.metrics import ConsumerMetrics
from consumer.processor import BatchProcessor, StepResult, run_step
from consumer.records import SourceRecord
from consumer.sweep import RecencySweep, owned_by
from state.config import Settings
from state.redis_store import StoreError
from state.store import CustomerStore

logger = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_CAP = 5.0
POLL_MS = 200
LATENCY_SAMPLES = 256  # latency observations per batch at most (evenly spaced)


class ModelSource(Protocol):
    """Keeps the processor current (hot reload) and the online model shared (merge)."""

    def maybe_sync(self, processor: BatchProcessor, *, force: bool = False) -> BatchProcessor:
        """The processor to use from now on (the same, or one with a newer model)."""
        ...


@dataclass
class RunSummary:
    """What one :meth:`ConsumerService.run` did."""

    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    changes: int = 0
    batches: int = 0
    store_retries: int = 0
    broker_retries: int = 0
    stopped_by: str = ""
    first_record_at: float | None = None  # time.monotonic() of the first polled record
    last_record_at: float | None = None  # ... and of the end of the last batch


class ConsumerService:
    """Runs the loop of one consumer instance (one group member)."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: CustomerStore,
        processor: BatchProcessor,
        metrics: ConsumerMetrics,
        model_source: ModelSource | None = None,
        sweep: RecencySweep | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.processor = processor
        self.metrics = metrics
        self.model_source = model_source
        self.sweep = sweep
        self.clock = clock
        self.kafka = KafkaIO(
            settings,
            on_revoked=self._on_revoked,
            on_assigned=self._on_assigned,
            consumer_overrides=consumer_overrides,
        )
        self._stop = False
        self._pending: dict[tuple[str, int], int] = {}  # written, not yet committed
        self._committed: dict[tuple[str, int], int] = {}  # last commit sent, per partition
        # The revoke hook runs on kafka-python's IO thread: offsets bookkeeping is shared.
        # Never held across a commit (the IO thread may need it while the commit waits).
        self._offsets_lock = threading.Lock()
        self._generation = 0  # bumped on every revoke: a batch in retry is then dropped
        self._sizes_at = -float("inf")
        self.cache = StateCache()
        self.metrics.set_model(processor.model.version)

    # -- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current batch, checkpoint, and leave :meth:`run` (signal-safe)."""
        self._stop = True

    @property
    def stopping(self) -> bool:
        return self._stop

    def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: partitions assigned and Redis reachable."""
        assigned = len(self.kafka.assignment())
        try:
            self.store.segment_sizes()
            redis_ok = True
        except StoreError:
            redis_ok = False
        ok = assigned > 0 and redis_ok
        return ok, f"assigned_partitions={assigned} redis={'up' if redis_ok else 'down'}"

    # -- the loop -----------------------------------------------------------------------------

    def run(
        self,
        *,
        max_events: int | None = None,
        idle_timeout: float | None = None,
        timeout: float | None = None,
    ) -> RunSummary:
        """Consume until stopped, ``max_events`` consumed, ``idle_timeout`` seconds without
        records (after the first record or assignment), or ``timeout`` seconds in all."""
        summary = RunSummary()
        start = last_activity = time.monotonic()
        self.kafka.ensure_topics()
        try:
            while not self._stop:
                now = time.monotonic()
                if timeout is not None and now - start >= timeout:
                    summary.stopped_by = "timeout"
                    break
                records = self.kafka.poll(POLL_MS)
                if not records:
                    if (
                        idle_timeout is not None
                        and self.kafka.assignment()
                        and time.monotonic() - last_activity >= idle_timeout
                    ):
                        summary.stopped_by = "idle"
                        break
                    if not self.kafka.assignment():
                        last_activity = time.monotonic()
                    self._sync()
                    continue
                last_activity = time.monotonic()
                self._handle(records, summary)
                if max_events is not None and summary.consumed >= max_events:
                    summary.stopped_by = "max_events"
                    break
                self._sync()
            else:
                summary.stopped_by = summary.stopped_by or "signal"
            try:
                self._checkpoint()
            except KafkaError as exc:  # state is written: a replay of the tail is harmless
                logger.warning("final commit failed error=%r", str(exc))
        finally:
            self.kafka.close()
        logger.info(
            "consumer stopped by=%s consumed=%d applied=%d duplicates=%d dead_lettered=%d "
            "changes=%d batches=%d",
            summary.stopped_by, summary.consumed, summary.applied, summary.duplicates,
            summary.dead_lettered, summary.changes, summary.batches,
        )  # fmt: skip
        return summary

    def _sync(self) -> None:
        self._maybe_sweep()
        if self.model_source is None:
            return
        try:
            new = self.model_source.maybe_sync(self.processor)
        except StoreError as exc:
            logger.warning("model sync failed error=%r", str(exc))
            return
        now = time.monotonic()
        if now - self._sizes_at >= self.settings.model_sync_seconds:
            self._sizes_at = now
            try:
                for seg, size in self.store.segment_sizes().items():
                    self.metrics.segment_size.labels(segment_id=str(seg)).set(size)
            except StoreError as exc:  # the next write meets it too: pause and retry there
                logger.debug("segment sizes unavailable error=%r", str(exc))
        if new is not self.processor:
            self.cache.clear()
            logger.info(
                "model reloaded old=%s new=%s", self.processor.model.version, new.model.version
            )
            self.processor = new
            self.metrics.set_model(new.model.version)

    def _maybe_sweep(self) -> None:
        """Run the recency sweep when due, over the customers of owned partitions."""
        now = self.clock()
        if self.sweep is None or not self.sweep.due(now):
            return
        topic = self.settings.events_topic
        owned = {tp.partition for tp in self.kafka.assignment() if tp.topic == topic}
        count = len(self.kafka.consumer.partitions_for_topic(topic) or ())
        if not owned or not count:
            return
        try:
            changes = self.sweep.run(
                self.processor,
                self.store,
                owned=owned_by({"count": count, "owned": owned}),
                now=now,
            )
        except StoreError as exc:  # Redis trouble: the next interval tries again
            logger.warning("recency sweep failed error=%r", str(exc))
            return
        self.cache.drop(c.customer_id for c in changes)  # their segment fields changed
        if changes:
            self.kafka.send_changes(changes)
            self.kafka.flush()
            for c in changes:
                self.metrics.segment_changes.labels(
                    from_segment=str(c.previous_segment_id),
                    to_segment=str(c.segment_id),
                    reason=c.reason,
                ).inc()

    def _handle(self, raw: list[Any], summary: RunSummary) -> None:
        records = [SourceRecord.from_kafka(r) for r in raw]
        started = time.perf_counter()
        step = self._write_with_retries(records, summary)
        if step is None:
            return  # dropped uncommitted (revoked or stopping while Redis was down)
        self.kafka.send_dead_letters(step.dead_letters)
        self.kafka.send_changes(step.changes)
        with self._offsets_lock:
            for r in records:
                key = (r.topic, r.partition)
                self._pending[key] = max(self._pending.get(key, 0), r.offset + 1)
        self._checkpoint_with_retries(summary)
        self._record(step, records, time.perf_counter() - started, summary)

    def _checkpoint_with_retries(self, summary: RunSummary) -> None:
        """Flush and commit; while the broker is unreachable, retry with capped backoff.

        The batch's state is already written, so nothing is lost if the process stops
        here: its records are redelivered and skipped by the guard.
        """
        delay = BACKOFF_START
        while True:
            try:
                self._checkpoint(sync=False)
                return
            except KafkaError as exc:
                summary.broker_retries += 1
                self.metrics.retries.labels(cause="broker").inc()
                logger.warning("broker unavailable retry_in=%.2fs error=%r", delay, str(exc))
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stop:
                        return  # exit uncommitted; the replay is harmless
                    time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
                delay = min(delay * 2, BACKOFF_CAP)

    def _write_with_retries(
        self, records: list[SourceRecord], summary: RunSummary
    ) -> StepResult | None:
        generation = self._generation
        delay = BACKOFF_START
        paused = False
        try:
            while True:
                saved = self.processor.segmenter.state()
                try:
                    return run_step(
                        records,
                        self.store,
                        self.processor,
                        now=self.clock(),
                        currency=self.settings.currency or None,
                        cache=self.cache,
                        markers=self.sweep.markers if self.sweep is not None else None,
                    )
                except StoreError as exc:
                    self.processor.segmenter.load_state(saved)  # learn only what is written
                    self.cache.clear()  # Redis may have restarted without its data
                    summary.store_retries += 1
                    self.metrics.retries.labels(cause="store").inc()
                    if not paused:
                        self.kafka.pause_all()
                        self.metrics.pauses.inc()
                        paused = True
                    logger.warning(
                        "store unavailable, paused retry_in=%.2fs error=%r", delay, str(exc)
                    )
                    if not self._wait(delay, generation):
                        logger.warning("batch dropped uncommitted records=%d", len(records))
                        return None
                    delay = min(delay * 2, BACKOFF_CAP)
        finally:
            if paused and generation == self._generation:
                self.kafka.resume_all()
                logger.info("store back, resumed")

    def _wait(self, delay: float, generation: int) -> bool:
        """Keep the group alive (poll paused partitions) for ``delay`` s; False to give up."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if self._stop or generation != self._generation:
                return False
            leftover = self.kafka.poll(min(POLL_MS, int((deadline - time.monotonic()) * 1000) + 1))
            if leftover:  # cannot happen while paused; never drop records silently
                raise RuntimeError("records delivered while paused")
        return not self._stop and generation == self._generation

    def _checkpoint(self, *, sync: bool = True) -> None:
        """Flush produced messages, then commit written offsets (state is already written).

        In the loop the commit is asynchronous (a lost commit only redelivers what the
        guard skips); on revoke and shutdown it is synchronous.
        """
        self.kafka.flush()
        with self._offsets_lock:
            committing = dict(self._pending)
            offsets = dict(committing)
            if sync:  # again, synchronously, what async commits may still have in flight
                owned = {(tp.topic, tp.partition) for tp in self.kafka.assignment()}
                offsets = {k: v for k, v in self._committed.items() if k in owned} | committing
        if offsets:
            self.kafka.commit(offsets, sync=sync)  # may raise: the pending stay for a retry
            with self._offsets_lock:
                self._committed.update(committing)
                for key, offset in committing.items():
                    if self._pending.get(key) == offset:
                        del self._pending[key]

    # -- rebalance ----------------------------------------------------------------------------

    def _on_revoked(self, revoked: set[TopicPartition]) -> dict[tuple[str, int], int]:
        """Rebalance checkpoint (on kafka-python's IO thread, see :mod:`consumer.kafka_io`).

        Flushes dead letters and changes, then returns every offset whose state is written
        for the listener to commit before the partitions go. If the flush fails nothing is
        committed: the next owner re-reads, and the guard skips what is already applied.
        """
        self._generation += 1
        self.cache.clear()  # another instance may write these customers from now on
        gone = {(tp.topic, tp.partition) for tp in revoked}
        try:
            self.kafka.flush()
            flushed = True
        except Exception as exc:
            logger.warning("flush on revoke failed error=%r; not committing", str(exc))
            flushed = False
        with self._offsets_lock:
            offsets = {k: v for k, v in self._committed.items() if k in gone} | self._pending
            self._committed.update(self._pending)
            self._pending = {}
            self._committed = {k: v for k, v in self._committed.items() if k not in gone}
        logger.info("partitions revoked partitions=%s", _tps(revoked))
        return offsets if flushed else {}

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.assigned.set(len(self.kafka.assignment()))
        logger.info("partitions assigned partitions=%s", _tps(assigned))
        if self.model_source is not None:  # new partitions: start from the shared model
            self._sync_forced()

    def _sync_forced(self) -> None:
        try:
            new = self.model_source.maybe_sync(self.processor, force=True)  # type: ignore[union-attr]
            if new is not self.processor:
                self.cache.clear()
                self.processor = new
                self.metrics.set_model(new.model.version)
        except StoreError as exc:
            logger.warning("model sync on assignment failed error=%r", str(exc))

    # -- metrics ------------------------------------------------------------------------------

    def _record(
        self, step: StepResult, records: list[SourceRecord], seconds: float, summary: RunSummary
    ) -> None:
        m, plan = self.metrics, step.plan
        summary.last_record_at = time.monotonic()
        if summary.first_record_at is None:
            summary.first_record_at = summary.last_record_at - seconds
        summary.batches += 1
        summary.consumed += len(records)
        summary.applied += plan.applied_events
        summary.duplicates += plan.duplicate_events
        summary.dead_lettered += len(step.dead_letters)
        summary.changes += len(step.changes)
        m.batch_seconds.observe(seconds)
        m.batch_size.observe(len(records))
        m.events.labels(outcome="consumed").inc(len(records))
        m.events.labels(outcome="applied").inc(plan.applied_events)
        m.events.labels(outcome="duplicate").inc(plan.duplicate_events)
        m.events.labels(outcome="dead_lettered").inc(len(step.dead_letters))
        reasons: dict[str, int] = {}
        for d in step.dead_letters:
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
        for reason, count in reasons.items():
            m.dead_letters.labels(reason=reason).inc(count)
        for c in step.changes:
            m.segment_changes.labels(
                from_segment=str(c.previous_segment_id),
                to_segment=str(c.segment_id),
                reason=c.reason,
            ).inc()
        now = self.clock()
        for source, times in (("event", plan.event_times), ("broker", plan.broker_times)):
            hist = m.latency.labels(source=source)
            stride = max(1, len(times) // LATENCY_SAMPLES)  # an even sample bounds the cost
            for ts in times[::stride]:
                hist.observe(max(now - ts, 0.0))
        for tp, lag in self.kafka.lag().items():
            m.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)


def _tps(tps: set[TopicPartition]) -> str:
    return ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in tps)) or "-"
