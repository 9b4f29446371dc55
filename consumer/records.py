"""What the consumer reads and emits: source records, decoded events, dead letters,
segment changes. Plain data and the decoding step; no I/O.

>>> from producer.contract import encode, CheckoutEvent
>>> ev = CheckoutEvent(event_id="e1", customer_id="c1", ts=100.0, amount=5.0)
>>> recs = [SourceRecord(topic="t", partition=0, offset=0, key=b"c1", value=encode(ev)),
...         SourceRecord(topic="t", partition=0, offset=1, key=b"c1", value=b"{")]
>>> ok, dead = decode_records(recs, now=200.0)
>>> [d.event.event_id for d in ok], [(d.reason, d.record.offset) for d in dead]
(['e1'], [('invalid_json', 1)])
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from producer.contract import CheckoutEvent, Rejection, decode


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRecord:
    """The parts of a Kafka record the consumer uses (built from a ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @classmethod
    def from_kafka(cls, record: Any) -> SourceRecord:
        ts = getattr(record, "timestamp", None)
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            timestamp_ms=ts if isinstance(ts, int) and ts >= 0 else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A message that will not be applied, the original bytes kept, and why."""

    record: SourceRecord
    reason: str
    detail: str

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter message (reason and source coordinates)."""
        r = self.record
        return [
            ("reason", self.reason.encode()),
            ("detail", self.detail[:1000].encode("utf-8", "replace")),
            ("source_topic", r.topic.encode()),
            ("source_partition", str(r.partition).encode()),
            ("source_offset", str(r.offset).encode()),
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    """A valid event and the record it came from."""

    record: SourceRecord
    event: CheckoutEvent


def decode_records(
    records: Iterable[SourceRecord], *, now: float, currency: str | None = None
) -> tuple[list[Decoded], list[DeadLetter]]:
    """Split records into valid events and dead letters (decoder reasons), order kept."""
    ok: list[Decoded] = []
    dead: list[DeadLetter] = []
    for r in records:
        if r.value is None:
            dead.append(DeadLetter(record=r, reason="invalid_json", detail="empty message"))
            continue
        out = decode(r.value, r.key, now=now, currency=currency or None)
        if isinstance(out, Rejection):
            dead.append(DeadLetter(record=r, reason=out.reason, detail=out.detail))
        else:
            ok.append(Decoded(record=r, event=out))
    return ok, dead


def customer_ids(decoded: Iterable[Decoded]) -> list[str]:
    """Distinct customer ids in first-seen order (what ``get_many`` needs)."""
    return list(dict.fromkeys(d.event.customer_id for d in decoded))


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentChange:
    """One ``segment-changes`` event (JSON, keyed by customer id)."""

    customer_id: str
    previous_segment_id: int | None
    previous_segment_name: str | None
    segment_id: int
    segment_name: str
    model_version: str
    event_ts: float
    reason: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "customer_id": self.customer_id,
                "previous_segment_id": self.previous_segment_id,
                "previous_segment_name": self.previous_segment_name,
                "segment_id": self.segment_id,
                "segment_name": self.segment_name,
                "model_version": self.model_version,
                "event_ts": self.event_ts,
                "reason": self.reason,
            },
            separators=(",", ":"),
        ).encode()
