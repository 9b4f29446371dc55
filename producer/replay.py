"""Replay a real transaction table as checkout events, in event-time order.

:func:`load_events` reads a CSV, Parquet or whitespace-separated file, maps its
columns onto the event contract (known layouts such as the Retail case study and
CDNOW are recognised; anything else takes a ``--map``), and checks every row with
:func:`producer.contract.validate`. Rows that cannot become valid events are
counted by reason, never sent. Each event id is derived from the file name, the
row number and the row's content, so a replay of the same file yields the same ids.

>>> import io
>>> table = io.StringIO("customer_id,trans_date,tran_amount\\nCS1,11-Feb-17,35\\nCS2,31-Feb-17,12\\n")
>>> result = load_events(table)
>>> [(e.customer_id, e.amount) for e in result.events], dict(result.rejected)
([('CS1', 35.0)], {'bad_ts': 1})
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from producer.contract import TABLE_COLUMNS, CheckoutEvent, validate
from state.errors import InvalidEvent

#: Contract fields a table column can feed.
MAPPABLE = TABLE_COLUMNS
NUMERIC = frozenset({"amount", "discount", "items", "age", "annual_income"})
#: Column spellings recognised without ``--map`` (compared lower-case, without punctuation).
ALIASES: dict[str, tuple[str, ...]] = {
    "customer_id": ("customerid", "customer", "custid", "clientid", "userid"),
    "ts": ("transdate", "date", "timestamp", "orderdate", "invoicedate", "time", "eventtime"),
    "amount": ("tranamount", "dollarvalue", "total", "sales", "purchaseamount", "value"),
    "items": ("numberofcds", "quantity", "qty", "quantityordered"),
    "discount": ("discountamount",),
    "annual_income": ("annualincome", "income", "annualincomek"),
}
#: Date formats of the known layouts, keyed by the raw column that holds the date.
KNOWN_DATE_FORMATS = {"trans_date": "%d-%b-%y", "date": "%Y%m%d"}
CDNOW = "cdnow"


def cdnow_path() -> Path:
    """Path of CDNOW_master.txt inside the installed ``lifetimes`` package."""
    from importlib.resources import files

    return Path(str(files("lifetimes") / "datasets" / "CDNOW_master.txt"))


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"customer_id=CustomerID,ts=InvoiceDate"`` -> ``{"customer_id": "CustomerID", ...}``.

    >>> parse_mapping("customer_id=cust, ts=when")
    {'customer_id': 'cust', 'ts': 'when'}
    """
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, column = part.partition("=")
        name = name.strip()
        if not sep or name not in MAPPABLE or not column.strip():
            raise ValueError(
                f"bad mapping {part.strip()!r}: use FIELD=COLUMN with FIELD in {MAPPABLE}"
            )
        mapping[name] = column.strip()
    return mapping


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_columns(columns: list[str], mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Contract field -> table column: explicit ``mapping`` first, then names and aliases.

    >>> resolve_columns(["customer_id", "trans_date", "tran_amount"])
    {'customer_id': 'customer_id', 'ts': 'trans_date', 'amount': 'tran_amount'}
    """
    mapping = dict(mapping or {})
    missing = [c for c in mapping.values() if c not in columns]
    if missing:
        raise ValueError(f"mapped columns not in the table: {missing}; it has {columns}")
    by_squash = {_squash(c): c for c in columns}
    out: dict[str, str] = {}
    for name in MAPPABLE:
        if name in mapping:
            out[name] = mapping[name]
            continue
        for candidate in (_squash(name), *ALIASES.get(name, ())):
            if candidate in by_squash and by_squash[candidate] not in mapping.values():
                out[name] = by_squash[candidate]
                break
    for required in ("customer_id", "ts", "amount"):
        if required not in out:
            raise ValueError(
                f"no column for {required!r} among {columns}: pass --map {required}=COLUMN"
            )
    return out


def read_table(
    source: str | Path | IO[str], fmt: str | None = None, encoding: str | None = None
) -> pd.DataFrame:
    """Read a transaction table with every cell as text (ids keep their leading zeros).

    ``fmt`` is ``csv``, ``parquet`` or ``whitespace``; by default it follows the
    extension (``.parquet``/``.pq``, ``.txt``/``.dat`` = whitespace, else CSV).
    """
    if fmt is None:
        suffix = Path(str(source)).suffix.lower() if isinstance(source, str | Path) else ".csv"
        fmt = {
            ".parquet": "parquet",
            ".pq": "parquet",
            ".txt": "whitespace",
            ".dat": "whitespace",
        }.get(suffix, "csv")
    if fmt == "parquet":
        return pd.read_parquet(source).astype(object)
    if fmt == "whitespace":
        return pd.read_csv(source, sep=r"\s+", dtype=str, encoding=encoding)
    if fmt == "csv":
        return pd.read_csv(
            source, dtype=str, encoding=encoding, keep_default_na=False, na_values=[""]
        )
    raise ValueError(f"unknown format {fmt!r}: use csv, parquet or whitespace")


@dataclass
class ReplayResult:
    """Valid events in event-time order, and the rows that could not become events."""

    events: list[CheckoutEvent]
    rows: int
    rejected: Counter[str] = field(default_factory=Counter)
    #: For each rejection reason, the first row number (1-based, header excluded) and its detail.
    examples: dict[str, tuple[int, str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One greppable line: ``rows=... events=... rejected=... reason=count ...``."""
        reasons = " ".join(f"{k}={v}" for k, v in sorted(self.rejected.items()))
        rejected = sum(self.rejected.values())
        return f"rows={self.rows} events={len(self.events)} rejected={rejected} {reasons}".rstrip()


def _timestamps(raw: pd.Series, date_format: str | None) -> np.ndarray:
    """Epoch seconds per cell (NaN where it does not parse); naive times are UTC."""
    text = raw.astype("string").str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if date_format is None and numeric.notna().all() and len(text):
        return numeric.to_numpy(dtype=float)  # already epoch seconds
    kwargs: dict[str, Any] = {"format": date_format} if date_format else {"format": "ISO8601"}
    parsed = pd.to_datetime(text, errors="coerce", utc=True, **kwargs)
    if date_format is None and parsed.isna().all():
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    # whole microseconds: the text had at most that, the float division adds noise below it
    return np.round(seconds.to_numpy(dtype=float, na_value=np.nan), 6)


def load_events(
    source: str | Path | IO[str],
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    date_format: str | None = None,
    encoding: str | None = None,
    now: float | None = None,
) -> ReplayResult:
    """Read ``source`` and turn each row into a checked event (see the module docstring).

    ``source`` may be the word ``"cdnow"`` for the data set shipped with ``lifetimes``.
    ``date_format`` (``strptime`` codes) defaults to the known layout's, else ISO 8601
    or epoch seconds. ``now`` anchors the contract's future-timestamp check.
    """
    if isinstance(source, str) and source.lower() == CDNOW and not Path(source).exists():
        source = cdnow_path()
    table = read_table(source, fmt, encoding)
    columns = resolve_columns(list(table.columns), mapping)
    if date_format is None:
        date_format = KNOWN_DATE_FORMATS.get(columns["ts"])
    name = Path(str(getattr(source, "name", source))).name
    return _to_events(table, columns, date_format, name, time.time() if now is None else now)


def _to_events(
    table: pd.DataFrame, columns: dict[str, str], date_format: str | None, name: str, now: float
) -> ReplayResult:
    n = len(table)
    values: dict[str, list[Any]] = {}
    unparsed: dict[str, np.ndarray] = {}
    for fname, column in columns.items():
        raw = table[column]
        text = raw.astype("string").str.strip()
        present = (text != "").fillna(False).to_numpy(dtype=bool)
        if fname == "ts":
            converted = _timestamps(raw, date_format)
        elif fname in NUMERIC:
            converted = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        else:
            values[fname] = [
                v if ok else None for v, ok in zip(text.tolist(), present, strict=True)
            ]
            continue
        unparsed[fname] = present & np.isnan(converted)
        cells: list[Any] = converted.tolist()
        if fname == "items":
            cells = [int(v) if v == v and float(v).is_integer() else v for v in cells]
        values[fname] = [v if ok and v == v else None for v, ok in zip(cells, present, strict=True)]
    text_columns = [table[c].astype("string").fillna("").tolist() for c in table.columns]
    raw_rows = ["\x1f".join(cells) for cells in zip(*text_columns, strict=True)]
    unparsable: dict[int, str] = {}
    for fname, mask in unparsed.items():
        for i in np.flatnonzero(mask).tolist():
            unparsable.setdefault(i, fname)
    names = list(values)
    result = ReplayResult(events=[], rows=n)
    append = result.events.append
    for i, row in enumerate(zip(*values.values(), strict=True)):
        if i in unparsable:
            bad = unparsable[i]
            reason = "bad_ts" if bad == "ts" else f"bad_type:{bad}"
            _reject(result, reason, i, f"{bad} {table[columns[bad]].iat[i]!r} does not parse")
            continue
        fields = {f: v for f, v in zip(names, row, strict=True) if v is not None}
        if "event_id" not in fields:
            digest = hashlib.sha1(f"{name}\x1f{i}\x1f{raw_rows[i]}".encode()).hexdigest()
            fields["event_id"] = f"r-{digest[:24]}"
        try:
            append(validate(fields, now=now))
        except InvalidEvent as exc:
            _reject(result, exc.reason, i, str(exc))
    result.events.sort(key=lambda e: e.ts)  # stable: equal times keep file order
    return result


def _reject(result: ReplayResult, reason: str, row: int, detail: str) -> None:
    result.rejected[reason] += 1
    result.examples.setdefault(reason, (row + 1, detail))
