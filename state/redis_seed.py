"""Seeding new customers without Lua: the fast path of the offline publish.

:meth:`state.redis_store.RedisStore.put_initial_columns` writes a publish batch in two
round trips:

1. ``TIME`` and ``EXISTS`` of a few of the batch's keys (all of them when a quarter of
   those exist: a re-publish over live customers).
2. For every customer that does not exist yet, ``RESTORE <key> <ttl> <payload>``: the hash
   serialised the way ``DUMP`` serialises it (:func:`dump_hashes`), plus one ``ZADD GT`` of
   the last-event index per chunk of :data:`_CHUNK` customers.

``RESTORE`` without ``REPLACE`` creates the key atomically and only if it does not exist
(one key: one hash slot, Redis Cluster). A new hash has nothing to guard against, so no
script runs, and Redis loads a ready listpack instead of running ``HSET`` field by field:
~3 us of Redis CPU per customer instead of ~20 for the script (docs/benchmarks.md).

Customers that already exist (a re-publish, a newer model over live state), those a
consumer created between the two round trips (``BUSYKEY``), those with a text value longer
than :data:`_MAX_VALUE` bytes, and every customer if the server refuses the payload (a
future serialisation; logged once) go through the guarded script like
:meth:`RedisStore.put_initial_many`, with the same rules. The hash a new customer gets is
field for field the one the script would write (a property test on a real Redis with
``sanitize-dump-payload yes`` pins it); its write version ``_v`` is the Redis clock in
microseconds read in step 1, as the script would start it.

The payloads are built a column at a time with Arrow compute kernels, not a customer at a
time in Python: the values are formatted (:func:`seed_value_columns`, the same texts as
:func:`state.keys.state_values` gives row by row; a property test pins them equal), framed
and joined into one buffer per chunk, by two threads while this one sends the chunks before;
only the CRC runs once per customer (in C).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anycrc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from state import keys as K
from state.features import STATE_FIELDS as STATE_ATTRS
from state.features import CustomerState
from state.ids import validate_customer_ids
from state.redis_store import RedisStore, StoreError
from state.store import SeedColumns, WriteResult

logger = logging.getLogger(__name__)

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
    """:func:`state.keys.money` of every value: ``"-1.50"`` from -150.

    The cents are the unscaled values of a decimal with scale 2 (16 bytes, two's
    complement), which Arrow prints with exactly two places.
    """
    words = np.empty((len(cents), 2), dtype="<i8")
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    buf = pa.py_buffer(words.tobytes())
    return pa.Array.from_buffers(pa.decimal128(38, 2), len(cents), [None, buf]).cast(pa.string())


def _floats(values: Sequence[Any], *, keep_point: bool) -> pa.Array:
    """:func:`state.keys.number` (``keep_point``: ``repr``) of every value; None -> null.

    Arrow prints the same shortest round-trip digits as ``repr`` but lays out very large
    and very small numbers differently (``1e-5`` vs ``1e-05``, ``1.2e+13`` vs
    ``12000000000000.0``): those few are formatted by Python.
    """
    arr = pa.array(values, pa.float64(), from_pandas=True)
    text = pc.cast(arr, pa.string())
    v = arr.to_numpy(zero_copy_only=False)  # NaN where unknown
    with np.errstate(invalid="ignore"):
        mag = np.abs(v)
        odd = (mag >= 1e15) | ((mag < 1e-4) & (mag > 0))
        odd |= pc.match_substring(text, "e").fill_null(False).to_numpy(zero_copy_only=False)
        if keep_point:  # repr keeps ".0" on whole numbers ("4272.0", "-0.0"); Arrow does not
            whole = pa.array((v == np.floor(v)) & ~odd)
            text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    if odd.any():
        fmt = repr if keep_point else K.number
        fixed = text.to_pylist()
        for i in np.flatnonzero(odd):
            fixed[i] = fmt(float(values[int(i)]))
        text = pa.array(fixed, pa.string())
    return text


def _b(text: str) -> str:
    """One RESP bulk string: ``$<bytes>\r\n<text>\r\n``."""
    return f"${len(text.encode())}\r\n{text}\r\n"


def _bulk(text: pa.Array) -> pa.Array:
    """:func:`_b` of every string or binary value (null stays null), of the same type."""
    size = pc.cast(pc.binary_length(text), pa.string())
    if text.type == pa.binary():
        size = size.cast(pa.binary())
        return pc.binary_join_element_wise(b"$", size, b"\r\n", text, b"\r\n", b"")
    return pc.binary_join_element_wise("$", size, "\r\n", text, "\r\n", "")


def _join(*parts: pa.Array | str, skip_nulls: bool = False) -> pa.Array:
    options = pc.JoinOptions(null_handling="skip" if skip_nulls else "emit_null")
    return pc.binary_join_element_wise(*parts, "", options=options)


def _payload(rows: pa.Array) -> bytes:
    """All strings of ``rows`` (nulls are empty) back to back: their data buffer."""
    if len(rows) == 0:
        return b""
    rows = rows.cast(pa.large_binary())
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    lo, hi = offsets[rows.offset], offsets[rows.offset + len(rows)]
    return rows.buffers()[2].to_pybytes()[lo:hi]


_CHUNK = 2_000  # customers per socket write: Redis runs one chunk while the next is built
_BUILDERS = 2  # threads building chunks (most of the work is in Arrow, outside the GIL)
_SAMPLE = 16  # keys probed first: when a quarter of them exist, every key is checked


def put_new_then_guarded(store: RedisStore, columns: SeedColumns) -> list[WriteResult]:
    """The body of :meth:`RedisStore.put_initial_columns` (see the module doc)."""
    ids = pa.array(validate_customer_ids(list(columns.customer_ids)), pa.string())  # all first
    if not len(ids):
        return []
    keys = _join(store._keys.base + ":customer:", ids)
    sample = keys.slice(0, _SAMPLE)
    first = _replies(store, b"*1\r\n$4\r\nTIME\r\n" + _exists(sample), 1 + len(sample))
    sec, usec = first[0]
    version = str(int(sec) * 1_000_000 + int(usec))
    if 4 * sum(first[1:]) < len(sample):  # a first publish: try to create them all
        candidates = np.arange(len(ids))
    else:  # a re-publish over live customers: create only the missing ones
        exists = _replies(store, _exists(keys), len(ids))
        candidates = np.flatnonzero(np.array(exists, dtype=np.int64) == 0)
    created = _create(store, columns, ids, keys, candidates, version)

    id_list = list(columns.customer_ids)
    results: list[WriteResult | None] = [None] * len(ids)
    for i in created.tolist():
        results[i] = WriteResult(id_list[i], True, None)
    if len(created) < len(ids):  # existing, just created by a consumer, or odd: guarded
        rest = np.setdiff1d(np.arange(len(ids)), created)
        seeds = _rows(columns, rest).seeds()  # only those rows, not the whole batch
        for i, r in zip(rest.tolist(), store.put_initial_many(seeds), strict=True):
            results[i] = r
    if len(created):  # put_initial_many counted its own; new customers had no segment
        segments = np.asarray(columns.segment_ids, dtype=np.int64)[created]
        found, counts = np.unique(segments, return_counts=True)
        store._bump_sizes(dict(zip(found.tolist(), counts.tolist(), strict=True)))
    return [r for r in results if r is not None]


def _exists(keys: pa.Array) -> bytes:
    return _payload(_join("*2\r\n$6\r\nEXISTS\r\n", _bulk(keys)))


def _replies(store: RedisStore, payload: bytes | Iterator[bytes], count: int) -> list[Any]:
    replies = store._roundtrip(payload, count)
    for reply in replies:
        if isinstance(reply, Exception):
            raise StoreError(f"seeding new customers failed: {reply}")
    return replies


def _rows(columns: SeedColumns, idx: np.ndarray) -> SeedColumns:
    """The seeds at ``idx``."""
    pick = idx.tolist()

    def sub(values: Sequence[Any]) -> Sequence[Any]:
        if isinstance(values, np.ndarray):
            return values[idx]
        return [values[i] for i in pick]

    return SeedColumns(
        customer_ids=sub(columns.customer_ids),
        states={a: sub(v) for a, v in columns.states.items()},
        segment_ids=sub(columns.segment_ids),
        segment_names=sub(columns.segment_names),
        model_version=columns.model_version,
        updated_at=columns.updated_at,
        as_of=columns.as_of,
    )


def _text_sizes(values: Sequence[Any] | None, n: int) -> np.ndarray:
    """Byte length of each text (0 for None)."""
    if values is None:
        return np.zeros(n, dtype=np.int64)
    sizes = pc.binary_length(pa.array(list(values), pa.string())).fill_null(0)
    return sizes.to_numpy(zero_copy_only=False).astype(np.int64)


def _create(
    store: RedisStore,
    columns: SeedColumns,
    ids: pa.Array,
    keys: pa.Array,
    candidates: np.ndarray,
    version: str,
) -> np.ndarray:
    """Round trip 2: ``RESTORE`` each candidate from a serialised hash; the indices created.

    Built and sent :data:`_CHUNK` customers at a time (Redis runs one chunk while the next
    is built), each chunk with its own ``ZADD GT`` of the last-event index. A customer
    whose ``RESTORE`` failed (it exists: ``BUSYKEY``; or a server that does not take the
    payload) is left to the caller's guarded path, as is one with a text value longer than
    :data:`_MAX_VALUE` bytes (numbers are always shorter).
    """
    n = len(columns)
    longest = np.maximum(
        _text_sizes(columns.segment_names, n), _text_sizes(columns.states.get("gender"), n)
    )
    candidates = candidates[longest[candidates] <= _MAX_VALUE]
    decay = columns.states.get("decay_ts")
    if decay is None or not store.last_event_index:
        known = np.zeros(n, dtype=bool)
    else:  # None or NaN: unknown
        known = pa.array(decay, pa.float64(), from_pandas=True).is_valid().to_numpy(False)
    spans = [candidates[lo : lo + _CHUNK] for lo in range(0, len(candidates), _CHUNK)]
    scored = [int(known[span].sum()) for span in spans]
    ttl_ms = _b(str(int(store.ttl_seconds or 0) * 1000)).encode()
    zadd = _b("ZADD") + _b(store._keys.last_event_index) + _b("GT")

    def chunk(span: np.ndarray, n_scored: int) -> bytes:
        part = _rows(columns, span)
        take = pa.array(span)
        values = _value_arrays(part)
        payloads = dump_hashes(
            [
                (K.AS_OF.encode(), K.number(part.as_of).encode()),
                (K.VERSION.encode(), version.encode()),
                (
                    K.SEGMENT_ID.encode(),
                    pc.cast(pa.array(np.asarray(part.segment_ids)), pa.string()),
                ),
                (K.SEGMENT_NAME.encode(), pa.array(list(part.segment_names), pa.string())),
                (K.MODEL_VERSION.encode(), part.model_version.encode()),
                (K.UPDATED_AT.encode(), K.number(part.updated_at).encode()),
                *((f.encode(), v) for f, v in values),
            ]
        )
        out = _payload(
            pc.binary_join_element_wise(
                b"*4\r\n$7\r\nRESTORE\r\n",
                _bulk(keys.take(take)).cast(pa.binary()),
                ttl_ms,
                _bulk(payloads),
                b"",
            )
        )
        if n_scored:
            members = _join(_bulk(dict(values)["decay_ts"]), _bulk(ids.take(take)))
            out += f"*{3 + 2 * n_scored}\r\n{zadd}".encode()
            out += _payload(pc.drop_null(members))
        return out

    # Arrow kernels release the GIL: two threads build chunks while this one sends them
    with ThreadPoolExecutor(max_workers=_BUILDERS, thread_name_prefix="seed") as pool:
        built = pool.map(chunk, spans, scored)
        replies = store._roundtrip(built, len(candidates) + sum(map(bool, scored)))
    ok = np.zeros(len(candidates), dtype=bool)
    refused: list[Exception] = []
    at = lo = 0
    for span, n_scored in zip(spans, scored, strict=True):
        for i, reply in enumerate(replies[at : at + len(span)], start=lo):
            if not isinstance(reply, Exception):
                ok[i] = True
            elif not str(reply).startswith("BUSYKEY"):
                refused.append(reply)
        at, lo = at + len(span) + bool(n_scored), lo + len(span)
        if n_scored and isinstance(replies[at - 1], Exception):
            raise StoreError(f"indexing new customers failed: {replies[at - 1]}")
    if refused and id(store) not in _WARNED:
        _WARNED.add(id(store))
        logger.warning(
            "Redis refused %d seed payloads (%s); those customers take the guarded script",
            len(refused),
            refused[0],
        )
    return candidates[ok]


_WARNED: set[int] = set()

# -- serialised hashes: the payload of DUMP/RESTORE ---------------------------------------------
#
# RESTORE takes what DUMP gives: an RDB value, then the RDB version (2 bytes, little endian)
# and a CRC-64 (Jones, "CRC-64/REDIS", little endian) of everything before it. A hash
# serialised as type 16 (RDB_TYPE_HASH_LISTPACK, Redis >= 7.0, RDB version 10) is its
# listpack as an RDB string: header (total bytes uint32 LE, number of entries uint16 LE),
# entries, end byte 0xFF. Each entry here is a string: encoding (0x80|len below 64 bytes,
# 0xE0|len>>8, len&0xFF below 4096), the bytes, and the entry's length backwards (one byte
# below 128, else two). Redis >= 7.0 (and Valkey) load it as they load their own DUMP.

_RDB_TYPE_HASH_LISTPACK = 16
_RDB_VERSION = 10  # Redis 7.0, the first with listpack hashes; later versions read it
_CRC64 = anycrc.Model("CRC64-REDIS")
_MAX_VALUE = 255  # customers with a longer value take the guarded path


def _entry_parts(size: int) -> tuple[bytes, bytes]:
    """Encoding bytes and back-length bytes of a listpack string entry of ``size`` bytes."""
    head = bytes([0x80 | size]) if size < 64 else bytes([0xE0 | size >> 8, size & 0xFF])
    total = len(head) + size
    back = bytes([total]) if total < 128 else bytes([total >> 7, (total & 127) | 128])
    return head, back


_HEADS = pa.array([_entry_parts(n)[0] for n in range(_MAX_VALUE + 1)], pa.binary())
_BACKS = pa.array([_entry_parts(n)[1] for n in range(_MAX_VALUE + 1)], pa.binary())


def _lp_entry(text: bytes) -> bytes:
    head, back = _entry_parts(len(text))
    return head + text + back


def _lp_entries(text: pa.Array, before: bytes = b"") -> pa.Array:
    """``before`` + :func:`_lp_entry` of every string (null stays null)."""
    size = pc.binary_length(text)
    return pc.binary_join_element_wise(
        before, pc.take(_HEADS, size), text.cast(pa.binary()), pc.take(_BACKS, size), b""
    )


def _fixed(rows: np.ndarray) -> pa.Array:
    """A 2-D uint8 array as a binary array of its rows."""
    n, width = rows.shape
    buf = pa.py_buffer(np.ascontiguousarray(rows).tobytes())
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, buf]).cast(pa.binary())


def dump_hashes(pairs: Sequence[tuple[bytes, bytes | pa.Array]]) -> pa.Array:
    """``RESTORE`` payloads of hashes, one per row: ``pairs`` in order, a field left out
    where its value is null. Values are bytes (the same for every row) or string arrays.

    >>> import struct
    >>> one = dump_hashes([(b"f", pa.array(["v"]))])[0].as_py()
    >>> one[0], one[-10:-8] == bytes([0xFF, 10, 0])[1:], len(one)
    (16, True, 26)
    >>> _CRC64.calc(one[:-8]) == struct.unpack("<Q", one[-8:])[0]
    True
    """
    n = next(len(v) for _, v in pairs if isinstance(v, pa.Array))
    parts: list[bytes | pa.Array] = []
    count = np.zeros(n, dtype=np.int64)
    for field, value in pairs:
        if isinstance(value, bytes):
            parts.append(_lp_entry(field) + _lp_entry(value))
            count += 2
        else:
            if (pc.max(pc.binary_length(value)).as_py() or 0) > _MAX_VALUE:
                raise ValueError(f"a value of {field.decode()} is longer than {_MAX_VALUE} bytes")
            parts.append(_lp_entries(value, before=_lp_entry(field)))
            count += 2 * value.is_valid().to_numpy(zero_copy_only=False)
    body = pc.binary_join_element_wise(
        *parts, b"", null_handling="skip"
    )  # fmt: skip
    total = pc.binary_length(body).to_numpy(zero_copy_only=False).astype(np.int64) + 7
    if total.max(initial=0) >= 1 << 14 or count.max(initial=0) >= 0xFFFF:  # pragma: no cover
        raise ValueError("a hash too large for a 2-byte RDB length")  # 64 x 255 bytes fit
    head = np.zeros((n, 8), dtype=np.uint8)  # RDB string length (2 bytes), listpack header
    head[:, 0] = 0x40 | (total >> 8)
    head[:, 1] = total & 0xFF
    head[:, 2:6] = total.astype("<u4").view(np.uint8).reshape(n, 4)
    head[:, 6:8] = count.astype("<u2").view(np.uint8).reshape(n, 2)
    value = pc.binary_join_element_wise(
        bytes([_RDB_TYPE_HASH_LISTPACK]), _fixed(head), body,
        bytes([0xFF, _RDB_VERSION, 0]), b"",
    )  # fmt: skip
    crc = np.fromiter((_CRC64.calc(v) for v in value.to_pylist()), dtype="<u8", count=n)
    return pc.binary_join_element_wise(value, _fixed(crc.view(np.uint8).reshape(n, 8)), b"")
