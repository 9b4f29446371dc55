"""Seeding new customers without Lua: the fast path of the offline publish.

:meth:`state.redis_store.RedisStore.put_initial_columns` writes a publish batch in two
round trips:

1. ``TIME`` and one ``EXISTS`` per customer key.
2. For every customer whose hash does not exist yet::

       DEL      {seg:v1:customer:<id>}:seed
       HSET     {seg:v1:customer:<id>}:seed _as_of .. _v .. segment_id .. <state fields>
       EXPIRE   {seg:v1:customer:<id>}:seed <ttl>        (only with a TTL)
       RENAMENX {seg:v1:customer:<id>}:seed seg:v1:customer:<id>

   and one ``ZADD GT`` of the last-event index for the batch. ``RENAMENX`` creates the
   customer's hash atomically, and only if it still does not exist; the staging key's
   hash tag is the customer key itself, so both keys live in one hash slot (Redis
   Cluster). A new hash has nothing to guard against, so no script runs: Redis spends a
   plain ``HSET`` on it instead of a Lua call (docs/benchmarks.md).

Customers that already exist (a re-publish, a newer model over live state), and those a
consumer created between the two round trips (``RENAMENX`` answered 0; their staging key
is deleted), go through the guarded script like :meth:`RedisStore.put_initial_many`,
with the same rules. The hash a new customer gets is field for field the one the script
would write (a test pins it); its write version ``_v`` is the Redis clock in
microseconds read in step 1, as the script would start it.

The commands are built a column at a time with Arrow compute kernels, not a customer at a
time in Python: the values are formatted (:func:`seed_value_columns`, the same texts as
:func:`state.keys.state_values` gives row by row; a property test pins them equal), framed
in the Redis protocol and joined into one buffer per round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from state import keys as K
from state.features import STATE_FIELDS as STATE_ATTRS
from state.features import CustomerState
from state.ids import validate_customer_id
from state.redis_store import RedisStore, StoreError
from state.store import SeedColumns, WriteResult, size_deltas

_DEFAULT_STATE = CustomerState()
_MONEY = frozenset({"gross_cents", "refunded_cents", "discount_cents"})
_INTS = frozenset({"orders", "refunds", "items"})
_REPR = frozenset({"spend_decayed", "orders_decayed"})  # repr keeps "1.0"; number gives "1"
_STR = frozenset({"gender"})


def seed_value_columns(columns: SeedColumns) -> list[tuple[str, list[str | None]]]:
    """``[(hash field, texts), ...]`` in :data:`state.keys.STATE_FIELDS` order, ``None``
    for an unknown value: :func:`state.keys.state_values`, a column at a time.

    >>> cols = SeedColumns(customer_ids=["a", "b"], states={"gross_cents": [250, -5],
    ...     "first_ts": [1750000000.5, None]}, segment_ids=[1, 1], segment_names=["x", "x"],
    ...     model_version="m", updated_at=0.0, as_of=0.0)
    >>> texts = dict(seed_value_columns(cols))
    >>> texts["gross"], texts["first_ts"], texts["spend_decayed"]
    (['2.50', '-0.05'], ['1750000000.5', None], ['0.0', '0.0'])
    """
    return [(f, a.to_pylist()) for f, a in _value_arrays(columns)]


def _value_arrays(columns: SeedColumns) -> list[tuple[str, pa.Array]]:
    """The texts of :func:`seed_value_columns` as Arrow string arrays (null = unknown)."""
    n = len(columns)
    out = []
    for field, attr in zip(K.STATE_FIELDS, STATE_ATTRS, strict=True):
        values = columns.states.get(attr)
        if values is None:
            values = [getattr(_DEFAULT_STATE, attr)] * n
        if attr in _MONEY:
            text = _money(np.asarray(values, dtype=np.int64))
        elif attr in _INTS:
            text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
        elif attr in _STR:
            text = pa.array([None if v is None else str(v) for v in values], pa.string())
        else:
            text = _floats(values, keep_point=attr in _REPR)
        out.append((field, text))
    return out


def _money(cents: np.ndarray) -> pa.Array:
    """:func:`state.keys.money` of every value: ``"-1.50"`` from -150."""
    whole, frac = np.divmod(np.abs(cents), 100)
    sign = pa.array(np.where(cents < 0, "-", ""))
    frac_text = pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), width=2, padding="0")
    return pc.binary_join_element_wise(
        sign, pc.cast(pa.array(whole), pa.string()), ".", frac_text, ""
    )


def _floats(values: Sequence[Any], *, keep_point: bool) -> pa.Array:
    """:func:`state.keys.number` (``keep_point``: ``repr``) of every value; None -> null.

    Arrow prints the same shortest round-trip digits as ``repr`` but lays out very large
    and very small numbers differently (``1e-5`` vs ``1e-05``, ``1.2e+13`` vs
    ``12000000000000.0``): those few are formatted by Python.
    """
    arr = pa.array(values, pa.float64(), from_pandas=True)
    text = pc.cast(arr, pa.string())
    mag = pc.abs(arr)
    odd = pc.or_(
        pc.or_(pc.greater_equal(mag, 1e15), pc.and_(pc.less(mag, 1e-4), pc.greater(mag, 0.0))),
        pc.match_substring(text, "e"),
    )
    if keep_point:  # repr: "4272.0", "-0.0"
        text = pc.if_else(
            pc.match_substring(text, "."), text, pc.binary_join_element_wise(text, ".0", "")
        )
    if pc.any(odd).as_py():
        fmt = repr if keep_point else K.number
        fixed = text.to_pylist()
        for i in np.flatnonzero(odd.fill_null(False).to_numpy(zero_copy_only=False)):
            fixed[i] = fmt(float(values[int(i)]))
        text = pa.array(fixed, pa.string())
    return text


def _b(text: str) -> str:
    """One RESP bulk string: ``$<bytes>\r\n<text>\r\n``."""
    return f"${len(text.encode())}\r\n{text}\r\n"


def _bulk(text: pa.Array) -> pa.Array:
    """:func:`_b` of every string (null stays null)."""
    size = pc.cast(pc.binary_length(text), pa.string())
    return pc.binary_join_element_wise("$", size, "\r\n", text, "\r\n", "")


def _field(name: str, text: pa.Array) -> pa.Array:
    """``<name> <text>`` as two RESP bulk strings (null where ``text`` is null)."""
    size = pc.cast(pc.binary_length(text), pa.string())
    return pc.binary_join_element_wise(_b(name) + "$", size, "\r\n", text, "\r\n", "")


def _join(*parts: pa.Array | str, skip_nulls: bool = False) -> pa.Array:
    options = pc.JoinOptions(null_handling="skip" if skip_nulls else "emit_null")
    return pc.binary_join_element_wise(*parts, "", options=options)


def _payload(rows: pa.Array) -> bytes:
    """All strings of ``rows`` (nulls are empty) back to back: their data buffer."""
    if len(rows) == 0:
        return b""
    rows = rows.cast(pa.large_string())
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    lo, hi = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return rows.buffers()[2].to_pybytes()[lo:hi]


_CHUNK = 2_000  # customers per socket write: Redis runs one chunk while the next is built
_SAMPLE = 16  # keys probed first: when a quarter of them exist, every key is checked


def put_new_then_guarded(store: RedisStore, columns: SeedColumns) -> list[WriteResult]:
    """The body of :meth:`RedisStore.put_initial_columns` (see the module doc)."""
    ids = [validate_customer_id(c) for c in columns.customer_ids]  # all, before any write
    if not ids:
        return []
    id_arr = pa.array(ids, pa.string())
    keys = _join(store._keys.base + ":customer:", id_arr)
    sample = keys.slice(0, _SAMPLE)
    first = _replies(store, b"*1\r\n$4\r\nTIME\r\n" + _exists(sample), 1 + len(sample))
    sec, usec = first[0]
    version = str(int(sec) * 1_000_000 + int(usec))
    if 4 * sum(first[1:]) < len(sample):  # a first publish: try to create them all
        candidates = np.arange(len(ids))
    else:  # a re-publish over live customers: create only the missing ones
        exists = _replies(store, _exists(keys), len(ids))
        candidates = np.flatnonzero(np.array(exists, dtype=np.int64) == 0)

    created: list[int] = []
    if len(candidates):
        created = _create(store, columns, id_arr, keys, candidates, version)
    results: list[WriteResult | None] = [None] * len(ids)
    for i in created:
        results[i] = WriteResult(ids[i], True, None)
    rest = sorted(set(range(len(ids))) - set(created))
    if rest:  # existing customers, and new ones a consumer created meanwhile: guarded
        seeds = columns.seeds()
        for i, r in zip(rest, store.put_initial_many([seeds[i] for i in rest]), strict=True):
            results[i] = r
    done = [r for r in results if r is not None]
    if created:  # put_initial_many counted its own
        store._bump_sizes(
            size_deltas((done[i] for i in created), (int(columns.segment_ids[i]) for i in created))
        )
    return done


def _exists(keys: pa.Array) -> bytes:
    return _payload(_join("*2\r\n$6\r\nEXISTS\r\n", _bulk(keys)))


def _replies(store: RedisStore, payload: bytes | Iterator[bytes], count: int) -> list[Any]:
    replies = store._roundtrip(payload, count)
    for reply in replies:
        if isinstance(reply, Exception):
            raise StoreError(f"seeding new customers failed: {reply}")
    return replies


def _create(
    store: RedisStore,
    columns: SeedColumns,
    ids: pa.Array,
    keys: pa.Array,
    candidates: np.ndarray,
    version: str,
) -> list[int]:
    """Round trip 2: stage and ``RENAMENX`` each candidate; the indices it created.

    The commands are built and sent :data:`_CHUNK` customers at a time (Redis runs one chunk
    while the next is built), each chunk with its own ``ZADD GT`` of the last-event index.
    """
    ttl = int(store.ttl_seconds or 0)
    per = 4 if ttl else 3  # DEL, HSET, (EXPIRE), RENAMENX
    values = _value_arrays(columns)
    decay = dict(values)["decay_ts"]
    known = decay.is_valid().to_numpy(zero_copy_only=False)
    spans = [candidates[lo : lo + _CHUNK] for lo in range(0, len(candidates), _CHUNK)]
    scored = [int(known[span].sum()) if store.last_event_index else 0 for span in spans]
    # Everything that does not depend on the chunk is framed once for the whole batch.
    segment_ids = pc.cast(pa.array(np.asarray(columns.segment_ids, dtype=np.int64)), pa.string())
    segment = _join(
        _b(K.SEGMENT_ID), _bulk(segment_ids), _b(K.SEGMENT_NAME),
        _bulk(pa.array(list(columns.segment_names), pa.string())),
    )  # fmt: skip
    state = _join(*(_field(f, v) for f, v in values), skip_nulls=True)
    present = sum(v.is_valid().to_numpy(zero_copy_only=False).astype(np.int64) for _, v in values)
    hset_head = _join("*", pc.cast(pa.array(2 * present + 14), pa.string()), "\r\n$4\r\nHSET\r\n")
    head = "".join(_b(x) for x in (K.AS_OF, K.number(columns.as_of), K.VERSION, version))
    tail = "".join(
        _b(x)
        for x in (
            K.MODEL_VERSION,
            columns.model_version,
            K.UPDATED_AT,
            K.number(columns.updated_at),
        )
    )
    members = _join(_bulk(decay), _bulk(ids))
    zadd = _b("ZADD") + _b(store._keys.last_event_index) + _b("GT")
    staged: list[pa.Array] = []

    def chunks() -> Iterator[bytes]:
        for span, n_scored in zip(spans, scored, strict=True):
            take = pa.array(span)
            key = keys.take(take)
            staging = _bulk(_join("{", key, "}:seed"))
            staged.append(staging)
            expire = ("*3\r\n$6\r\nEXPIRE\r\n", staging, _b(str(ttl))) if ttl else ()
            rows = _join(
                "*2\r\n$3\r\nDEL\r\n", staging,
                hset_head.take(take), staging, head, segment.take(take), tail, state.take(take),
                *expire,
                "*3\r\n$8\r\nRENAMENX\r\n", staging, _bulk(key),
            )  # fmt: skip
            out = _payload(rows)
            if n_scored:
                out += f"*{3 + 2 * n_scored}\r\n{zadd}".encode()
                out += _payload(pc.drop_null(members.take(take)))
            yield out

    replies = _replies(store, chunks(), per * len(candidates) + sum(map(bool, scored)))
    renamed: list[bool] = []
    at = 0
    for span, n_scored in zip(spans, scored, strict=True):
        renamed += (r == 1 for r in replies[at + per - 1 : at + per * len(span) : per])
        at += per * len(span) + bool(n_scored)
    ok = np.array(renamed, dtype=bool)
    if not ok.all():  # a consumer created them between the round trips: drop the staging
        lost = pa.concat_arrays(staged).filter(pa.array(~ok))
        _replies(store, _payload(_join("*2\r\n$3\r\nDEL\r\n", lost)), len(lost))
    return [int(i) for i in candidates[ok]]
