"""Pacing and sinks shared by the simulator and the replayer.

:func:`paced` releases events no sooner than their event time allows at a given
speed; :class:`EventSink` writes events to a file (JSON lines, CSV or Parquet)
instead of a broker, for dry runs and tests.

>>> clock = iter([0.0, 0.0, 0.5, 1.0, 2.0]).__next__
>>> slept = []
>>> list(paced([10.0, 11.0, 12.0], lambda t: t, speed=1.0, clock=clock, sleep=slept.append))
[10.0, 11.0, 12.0]
>>> slept
[0.5, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import msgspec

from producer.contract import CheckoutEvent, encode

T = TypeVar("T")
#: Columns of event tables, in the event contract's names.
EVENT_COLUMNS: tuple[str, ...] = tuple(CheckoutEvent.__struct_fields__)


def paced(
    items: Iterable[T],
    ts_of: Callable[[T], float],
    *,
    speed: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[T]:
    """Yield ``items`` so that event time advances ``speed`` times faster than the wall clock.

    ``speed=None`` yields as fast as the consumer of the iterator takes them; ``1.0``
    is real time. Event time is measured from the first item's ``ts_of``. ``sleep`` may
    be a ``threading.Event().wait`` so that a stop request cuts a long wait short.
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0")
    first_ts: float | None = None
    wall0 = 0.0
    for item in items:
        if speed is not None:
            ts = ts_of(item)
            if first_ts is None:
                first_ts, wall0 = ts, clock()
            wait = wall0 + (ts - first_ts) / speed - clock()
            if wait > 0:
                sleep(wait)
        yield item


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"30d"``.

    >>> parse_duration("15m"), parse_duration("2d"), parse_duration("1.5")
    (900.0, 172800.0, 1.5)
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    text = text.strip().lower()
    factor = units.get(text[-1:])
    number = text[:-1] if factor is not None else text
    value = float(number) * (factor or 1.0)
    if not value > 0:
        raise ValueError(f"duration must be > 0, got {text!r}")
    return value


class EventSink:
    """Writes events to ``path``: ``.jsonl``/``.json`` (one encoded event per line),
    ``.csv`` or ``.parquet`` (one row per event, contract column names).

    Columnar formats are written on :meth:`close`; JSON lines stream as they come.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._rows: list[dict[str, Any]] = []
        self._fh: IO[bytes] | None = None

    @property
    def columnar(self) -> bool:
        return self.path.suffix.lower() in (".csv", ".parquet", ".pq")

    def write(self, event: CheckoutEvent) -> None:
        if self.columnar:
            self._rows.append(msgspec.structs.asdict(event))
        else:
            if self._fh is None:
                self._fh = self.path.open("wb")
            self._fh.write(encode(event) + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        elif self.columnar:
            import pandas as pd

            frame = pd.DataFrame(self._rows, columns=list(EVENT_COLUMNS))
            write_table(frame, self.path)
            self._rows = []
        elif self.count == 0:
            self.path.write_bytes(b"")

    def __enter__(self) -> EventSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_table(frame: Any, path: str | Path) -> None:
    """Write a DataFrame as CSV or Parquet, chosen by the file extension.

    CSV timestamps are written in RFC 3339 (``2026-01-31T12:00:00.000Z``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    else:
        raise ValueError(f"unknown table format {suffix!r}: use .csv or .parquet")
