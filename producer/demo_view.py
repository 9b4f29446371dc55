"""What the demo shows while it streams: a live terminal view fed by the consumer's
``/metrics``, the segment sizes in Redis and the ``segment-changes`` topic.

Pure rendering lives in :func:`render`; the readers at the bottom do the I/O.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


@dataclass
class LiveStats:
    """Figures the live view shows; updated by the demo loop."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    consumed: int = 0
    applied: int = 0
    dead_lettered: int = 0
    rate: float = 0.0  # events/s consumed, over the last refresh interval
    lag: int = 0  # produced but not yet consumed (exact: counted on both sides)
    sizes: list[tuple[int, str, int]] = field(default_factory=list)  # id, name, size
    changes: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    changes_seen: int = 0

    def update_rate(self, consumed: int, dt: float) -> None:
        """Consumed-events rate from the counter's growth over ``dt`` seconds."""
        if dt > 0:
            self.rate = max(consumed - self.consumed, 0) / dt
        self.consumed = consumed
        self.lag = max(self.sent - consumed, 0)


def render(stats: LiveStats, *, seconds: float, metrics_url: str) -> Group:
    """The live view as a rich renderable."""
    elapsed = time.monotonic() - stats.started
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(f"live {elapsed:5.1f}/{seconds:.0f} s", style="bold"),
        f"sent {stats.sent:,}",
        f"consumed {stats.consumed:,}",
        f"applied {stats.applied:,}",
        f"dead-lettered {stats.dead_lettered:,}",
        f"{stats.rate:,.0f} events/s",
        f"lag {stats.lag:,}",
    )
    sizes = Table(title="segment sizes (Redis)", title_justify="left", expand=False)
    sizes.add_column("id", justify="right")
    sizes.add_column("segment")
    sizes.add_column("customers", justify="right")
    total = sum(s for _, _, s in stats.sizes) or 1
    for sid, name, size in stats.sizes:
        sizes.add_row(str(sid), name, f"{size:,} ({size / total:.0%})")
    changes = Table(
        title=f"recent segment changes ({stats.changes_seen:,} so far)",
        title_justify="left",
        show_header=False,
    )
    changes.add_column("change")
    for line in stats.changes:
        changes.add_row(line)
    if not stats.changes:
        changes.add_row(Text("none yet", style="dim"))
    return Group(head, sizes, changes, Text(f"metrics: {metrics_url}", style="dim"))


def describe_change(payload: bytes) -> str:
    """One line for a segment-change event.

    >>> describe_change(b'{"customer_id": "c1", "previous_segment_name": "Loyal Customers",'
    ...                 b' "segment_name": "At-Risk", "reason": "sweep"}')
    'c1: Loyal Customers -> At-Risk (sweep)'
    """
    try:
        e = json.loads(payload)
        before = e.get("previous_segment_name") or e.get("previous_segment_id") or "new"
        after = e.get("segment_name") or e.get("segment_id")
        return f"{e.get('customer_id')}: {before} -> {after} ({e.get('reason', '?')})"
    except (ValueError, AttributeError):
        return "(unreadable change event)"


def parse_metrics(text: str) -> dict[str, float]:
    """Flatten Prometheus text into ``{"name{label=value,...}": value}``.

    >>> parse_metrics('segstream_events_total{outcome="consumed"} 12.0\\n')
    {'segstream_events_total{outcome=consumed}': 12.0}
    """
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """Read a ``/metrics`` endpoint (empty dict when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode())
    except OSError:
        return {}


def events_outcome(metrics: dict[str, float], outcome: str) -> int:
    return int(metrics.get(f"segstream_events_total{{outcome={outcome}}}", 0))


def poll_changes(consumer: Any, stats: LiveStats) -> None:
    """Move any new segment-change events into ``stats`` (non-blocking)."""
    batches: Iterable[Any] = consumer.poll(timeout_ms=0, max_records=500).values()
    for records in batches:
        for r in records:
            stats.changes_seen += 1
            stats.changes.appendleft(describe_change(r.value))
