"""Reading customer and transaction tables (CSV or Parquet) into canonical columns.

Every column name is turned into ``snake_case`` with units in brackets dropped
(``Annual Income (k$)`` -> ``annual_income``), then an explicit mapping (flags or a
small JSON/TOML file) is applied, then well-known spellings are recognised: the
customer id (``CustomerID``, ``Customer ID``, ``cust_id`` ...) and, for
transactions, the event contract's names (``ts``, ``amount``, ``discount``,
``items``, ``category``, ``type``, ``event_id``).

>>> snake_case("Annual Income (k$)")
'annual_income'
>>> snake_case("CustomerID"), snake_case("Customer ID"), snake_case("Spending Score (1-100)")
('customer_id', 'customer_id', 'spending_score')
>>> parse_mapping(["Annual Income (k$)=annual_income", "trans_date=ts,tran_amount=amount"])
{'Annual Income (k$)': 'annual_income', 'trans_date': 'ts', 'tran_amount': 'amount'}
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from state.errors import ConfigError

logger = logging.getLogger(__name__)

CUSTOMER_ID = "customer_id"
CUSTOMER_ID_SPELLINGS = frozenset(
    {"customer_id", "customerid", "cust_id", "custid", "client_id", "clientid", "user_id",
     "userid", "customer_no", "customer_number", "member_id", "customer_key", "customer"}
)  # fmt: skip
# canonical event-contract column -> spellings recognised in transaction tables (after snake_case)
TRANSACTION_SPELLINGS: dict[str, frozenset[str]] = {
    "event_id": frozenset({"event_id", "transaction_id", "trans_id", "txn_id"}),
    "ts": frozenset(
        {
            "ts",
            "timestamp",
            "date",
            "trans_date",
            "transaction_date",
            "order_date",
            "orderdate",
            "invoice_date",
            "invoicedate",
            "purchase_date",
            "event_time",
            "datetime",
            "time",
        }
    ),
    "amount": frozenset(
        {
            "amount",
            "tran_amount",
            "trans_amount",
            "transaction_amount",
            "sales",
            "sale_amount",
            "purchase_amount",
            "total",
            "revenue",
            "dollar_value",
            "order_value",
            "value",
        }
    ),
    "discount": frozenset({"discount", "discount_amount"}),
    "items": frozenset(
        {"items", "quantity", "qty", "quantity_ordered", "quantityordered", "number_of_cds"}
    ),
    "category": frozenset({"category", "product_category", "productline", "product_line"}),
    "type": frozenset({"type", "event_type"}),
}


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """How to read the inputs: explicit column mapping, date format, encoding, separator."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    date_format: str | None = None
    encoding: str | None = None
    sep: str | None = None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: object) -> LoadOptions:
        """Read ``{"map": {...}, "date_format": ..., "encoding": ..., "sep": ...}`` (JSON or TOML).

        Values given in ``overrides`` (flags) win over the file; mappings are merged.
        """
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
        mapping = {**dict(data.get("map", {})), **dict(overrides.pop("mapping", {}) or {})}  # type: ignore[call-overload]
        kwargs = {k: data.get(k) for k in ("date_format", "encoding", "sep")}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(mapping=mapping, **kwargs)  # type: ignore[arg-type]


def snake_case(name: str) -> str:
    """Column name -> ``snake_case`` without bracketed units."""
    s = re.sub(r"\(.*?\)|\[.*?\]", " ", str(name))
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()
    return s or "column"


def parse_mapping(items: Iterable[str] | None) -> dict[str, str]:
    """``["A=b", "C=d,E=f"]`` -> ``{"A": "b", "C": "d", "E": "f"}`` (source -> target)."""
    out: dict[str, str] = {}
    for item in items or ():
        for pair in item.split(","):
            if not pair.strip():
                continue
            if "=" not in pair:
                raise ConfigError(f"column mapping {pair!r} is not SOURCE=TARGET")
            src, dst = pair.split("=", 1)
            out[src.strip()] = dst.strip()
    return out


def read_table(
    path: str | Path,
    options: LoadOptions | None = None,
    spellings: Mapping[str, frozenset[str]] | None = None,
) -> pd.DataFrame:
    """A CSV (any encoding; UTF-8 first, then latin-1) or Parquet file as a DataFrame.

    In a CSV the customer id column is read as text, so ``00001`` stays ``00001``.
    """
    opts = options or LoadOptions()
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"input file {p} does not exist")
    if p.suffix.lower() in {".parquet", ".pq"}:
        return pd.read_parquet(p)
    sep = opts.sep
    if p.suffix.lower() == ".txt" and sep is None:
        sep = r"\s+"
    for encoding in [opts.encoding] if opts.encoding else ["utf-8", "latin-1"]:
        try:
            header = pd.read_csv(p, sep=sep or ",", encoding=encoding, nrows=0)
            named = canonical_columns(header, opts.mapping, spellings)
            text = {
                orig: str for orig, new in zip(header.columns, named.columns, strict=True)
                if new == CUSTOMER_ID
            }  # fmt: skip
            df = pd.read_csv(p, sep=sep or ",", encoding=encoding, low_memory=False, dtype=text)
        except UnicodeDecodeError:
            logger.info("encoding_fallback path=%s tried=%s", p, encoding)
            continue
        df.attrs["encoding"] = encoding
        return df
    raise ConfigError(f"could not decode {p}")  # pragma: no cover - latin-1 decodes any byte


def canonical_columns(
    df: pd.DataFrame,
    mapping: Mapping[str, str] | None = None,
    spellings: Mapping[str, frozenset[str]] | None = None,
) -> pd.DataFrame:
    """Rename columns: explicit mapping first, then snake_case + recognised spellings."""
    mapping = dict(mapping or {})
    snake_map = {snake_case(k): v for k, v in mapping.items()}
    renamed: dict[str, str] = {}
    for col in df.columns:
        if col in mapping:
            renamed[col] = mapping[col]
            continue
        s = snake_case(col)
        renamed[col] = snake_map.get(s, s)
    taken = set(renamed.values())
    recognised = {CUSTOMER_ID: CUSTOMER_ID_SPELLINGS, **dict(spellings or {})}
    for target, names in recognised.items():
        if target in taken:
            continue
        for col, new in renamed.items():
            if new in names and col not in mapping:
                renamed[col] = target
                taken.add(target)
                break
    out = df.rename(columns=renamed)
    if out.columns.duplicated().any():
        dup = sorted(set(out.columns[out.columns.duplicated()]))
        raise ConfigError(f"two input columns map to the same name: {dup}; use --map")
    return out


def customer_ids(values: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (``1.0``, from a column with gaps) lose the ``.0``."""
    if pd.api.types.is_float_dtype(values):
        whole = values.dropna()
        if (whole == np.floor(whole)).all():
            values = values.astype("Int64")
    out = values.astype("string").str.strip()
    return out.astype(object).where(out.notna(), None)


def parse_time(values: pd.Series, date_format: str | None = None) -> pd.Series:
    """Dates/times or numbers -> epoch seconds (float, UTC); unparseable -> NaN."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        v = values.astype(float)
        known = v.dropna()
        if len(known) and known.between(19_000_101, 21_001_231).all() and (known % 1 == 0).all():
            values = v.astype("Int64").astype("string")  # YYYYMMDD integers, e.g. CDNOW
            date_format = date_format or "%Y%m%d"
        else:
            return v.where(v.abs() < 1e11, v / 1000.0)  # milliseconds -> seconds
    if pd.api.types.is_datetime64_any_dtype(values):
        dt = values
    else:
        fmt = date_format or guess_date_format(values)
        dt = pd.to_datetime(values, format=fmt, errors="coerce", utc=True)
    if getattr(dt.dt, "tz", None) is None:
        dt = dt.dt.tz_localize("UTC")
    ns = dt.astype("int64").astype(float)
    return pd.Series(np.where(dt.isna(), np.nan, ns / 1e9), index=values.index)


DATE_FORMATS = (
    "ISO8601", "%d-%b-%y", "%d-%b-%Y", "%m/%d/%y", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y",
    "%m/%d/%Y %H:%M", "%m/%d/%y %H:%M", "%d/%m/%Y %H:%M", "%Y%m%d",
)  # fmt: skip


def guess_date_format(values: pd.Series, sample: int = 1000) -> str | None:
    """The first of :data:`DATE_FORMATS` that parses every one of the first ``sample`` dates
    (month-first before day-first when both fit; pass ``--date-format`` to decide).

    >>> guess_date_format(pd.Series(["16-May-15", "02-Jan-19"]))
    '%d-%b-%y'
    >>> guess_date_format(pd.Series(["02/24/03", "05/07/03"]))
    '%m/%d/%y'
    """
    head = values.dropna().astype(str).head(sample)
    if head.empty:
        return None
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(head, format=fmt, errors="coerce", utc=True)
        if parsed.notna().all():
            return fmt
    return None


def parse_as_of(value: str | float | None, date_format: str | None = None) -> float | None:
    """``--as-of`` as epoch seconds: a number, an ISO date/time, or a date in ``date_format``."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    parsed = parse_time(pd.Series([str(value)]), date_format)
    if np.isnan(parsed.iloc[0]) and date_format:
        parsed = parse_time(pd.Series([str(value)]), None)
    if np.isnan(parsed.iloc[0]):
        raise ConfigError(f"--as-of {value!r} is neither epoch seconds nor a date")
    return float(parsed.iloc[0])


def load_customers(path: str | Path, options: LoadOptions | None = None) -> pd.DataFrame:
    """A customers table with canonical names; ``customer_id`` is a string column."""
    opts = options or LoadOptions()
    raw = read_table(path, opts)
    df = canonical_columns(raw, opts.mapping)
    if CUSTOMER_ID not in df.columns:
        raise ConfigError(
            f"no customer id column in {path} (columns: {list(raw.columns)}); "
            "use --map 'YourColumn=customer_id'"
        )
    df[CUSTOMER_ID] = customer_ids(df[CUSTOMER_ID])
    df.attrs["encoding"] = raw.attrs.get("encoding")
    return df


def load_transactions(path: str | Path, options: LoadOptions | None = None) -> pd.DataFrame:
    """A transactions table in the event contract's columns.

    ``ts`` becomes epoch seconds (NaN when unparseable; cleaning counts and drops those),
    ``discount`` defaults to 0, ``items`` to 1, ``type`` to ``"purchase"``.
    """
    opts = options or LoadOptions()
    raw = read_table(path, opts, TRANSACTION_SPELLINGS)
    df = canonical_columns(raw, opts.mapping, TRANSACTION_SPELLINGS)
    missing = [c for c in (CUSTOMER_ID, "ts", "amount") if c not in df.columns]
    if missing:
        raise ConfigError(
            f"transactions {path} lack {missing} (columns: {list(raw.columns)}); "
            "map them, e.g. --map 'trans_date=ts,tran_amount=amount'"
        )
    df[CUSTOMER_ID] = customer_ids(df[CUSTOMER_ID])
    df["ts"] = parse_time(df["ts"], opts.date_format)
    df["amount"] = pd.to_numeric(df["amount"], errors="coerce")
    df["discount"] = (
        pd.to_numeric(df["discount"], errors="coerce").fillna(0.0) if "discount" in df else 0.0
    )
    df["items"] = (
        pd.to_numeric(df["items"], errors="coerce").fillna(1).astype("int64")
        if "items" in df
        else 1
    )
    df["type"] = df["type"].astype(str).str.lower() if "type" in df else "purchase"
    if "category" not in df:
        df["category"] = None
    df.attrs["encoding"] = raw.attrs.get("encoding")
    return df
