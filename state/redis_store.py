"""The Redis customer store: one pipelined round trip per batch, guarded by a Lua script.

Each customer write is one ``EVALSHA`` of ``guarded_write.lua`` on the customer's key
alone (one hash slot, as Redis Cluster requires). A batch is packed with hiredis and sent
128 customers per socket write (Redis runs one chunk while the next is packed), then the
replies are read back in order: redis-py's pipeline object costs more client CPU per
command than Redis spends running the script (docs/benchmarks.md). Each record is one
MessagePack argument.

Diff writes: the store remembers, for up to ``remember`` customers, the state it last read
or wrote and the record's version (``_v``, bumped by every applied guarded write). An
update of a remembered customer sends only the state fields that changed (plus the
segment fields and the offset), and the script applies it only if the stored version is
still the remembered one; otherwise it answers "conflict" and the store resends the full
record in a second round trip, so a stale diff is never applied. The last-event index (``ZADD GT``) rides in the same round trip;
live segment sizes (``HINCRBY``) need the scripts' answers, so they follow in a second,
small round trip and only when some segment changed.

Sizes are counters: a crash between the two round trips loses that batch's changes,
and :meth:`RedisStore.recount_segment_sizes` rebuilds them from the customer hashes.

Connection is lazy (first use); :meth:`close` (or a ``with`` block) closes the client,
also one passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

import msgspec
import redis

from state import keys as K
from state.errors import SegstreamError
from state.features import CustomerState
from state.ids import validate_customer_id
from state.store import (
    CustomerSeed,
    CustomerStore,
    CustomerUpdate,
    SeedColumns,
    StoredCustomer,
    WriteResult,
    last_event_score,
    size_deltas,
)

_hiredis_pack: Callable[..., Any] | None
try:  # hiredis is a declared dependency; the fallback keeps the store importable without it
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover
    _hiredis_pack = None

logger = logging.getLogger(__name__)

GUARDED_WRITE = resources.files("state").joinpath("guarded_write.lua").read_text()
"""The guard script; field names come from :mod:`state.keys` with each record."""


class StoreError(SegstreamError):
    """The customer store could not be read or written (Redis unreachable, refused, ...)."""


def pack_command(args: Sequence[str | bytes | int]) -> bytes:
    """One command in the Redis protocol (RESP).

    >>> pack_command(["HGET", "k", "f"])
    b'*3\\r\\n$4\\r\\nHGET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nf\\r\\n'
    """
    if _hiredis_pack is not None:
        return bytes(_hiredis_pack(tuple(args)))
    out = [b"*%d\r\n" % len(args)]  # pragma: no cover
    for a in args:  # pragma: no cover
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)  # pragma: no cover


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hash_reply(reply: Any) -> dict[str, str]:
    """HGETALL reply (RESP2 flat list or RESP3 map) as a str -> str dict."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    if reply and isinstance(reply[0], bytes):  # one decode for the whole hash
        text = b"\x00".join(reply).decode()
        parts = text.split("\x00")
        if len(parts) == len(reply):  # no NUL inside a value
            return dict(zip(parts[::2], parts[1::2], strict=True))
    it = iter(reply)
    return {_text(k): _text(v) for k, v in zip(it, it, strict=True)}


class RedisStore(CustomerStore):
    """:class:`CustomerStore` on Redis (schema v1 of :mod:`state.keys`).

    ``ttl_seconds`` (optional) expires a customer that has not been written for that long.
    ``keys_per_script`` > 1 packs that many customers into one script call: faster, but
    only valid when all keys share a hash slot, i.e. never on Redis Cluster
    (docs/benchmarks.md has the numbers). ``last_event_index=False`` skips the recency
    index (about 100 bytes and a few microseconds of Redis CPU per customer) for
    deployments that do not sweep idle customers; :meth:`idle_customers` then finds none.
    ``remember`` bounds how many customers' last read or written state the store keeps for
    diff writes (see the module doc; 0: always write full records).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = K.DEFAULT_PREFIX,
        ttl_seconds: int | None = None,
        keys_per_script: int = 1,
        last_event_index: bool = True,
        remember: int = 500_000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.keys_per_script = keys_per_script
        self.last_event_index = last_event_index
        self.remember = remember
        self._seen: dict[str, tuple[str, CustomerState]] = {}  # id -> (version, state)
        self._keys = K.Keys(prefix)
        self._sha: str | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = K.DEFAULT_PREFIX, **options: Any) -> RedisStore:
        """A store on ``url``; extra ``options`` go to :meth:`redis.Redis.from_url`
        (e.g. ``Settings.redis_client_options()``) unless they are store options."""
        store_opts = {k: options.pop(k) for k in _STORE_OPTIONS if k in options}
        return cls(redis.Redis.from_url(url, **options), prefix=prefix, **store_opts)

    def close(self) -> None:
        self.client.close()

    # -- raw round trips ----------------------------------------------------------------------

    def _roundtrip(self, payload: bytes | Iterable[bytes], replies: int) -> list[Any]:
        """Send pre-packed commands, then read their replies (errors as values).

        ``payload`` may be an iterable of chunks, packed lazily: Redis starts on the first
        chunk while the next one is being packed.
        """
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()
        except TypeError:  # pragma: no cover - redis-py < 5.3 wants a command name
            conn = pool.get_connection("_")
        except redis.RedisError as exc:
            raise StoreError(f"Redis error: {exc}") from exc
        try:
            for chunk in [payload] if isinstance(payload, bytes) else payload:
                conn.send_packed_command([chunk], check_health=False)
            out: list[Any] = []
            for _ in range(replies):
                try:
                    out.append(conn.read_response())
                except redis.ResponseError as exc:  # the reply was read; the stream is in step
                    out.append(exc)
            return out
        except redis.RedisError as exc:
            conn.disconnect()
            raise StoreError(f"Redis error: {exc}") from exc
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this socket
            raise
        finally:
            pool.release(conn)

    def _script_sha(self) -> str:
        if self._sha is None:
            try:
                self._sha = str(self.client.script_load(GUARDED_WRITE))
            except redis.RedisError as exc:
                raise StoreError(f"Redis error loading the guard script: {exc}") from exc
        return self._sha

    # -- reads --------------------------------------------------------------------------------

    def get_many(self, customer_ids: Sequence[str]) -> dict[str, StoredCustomer | None]:
        ids = [validate_customer_id(c) for c in customer_ids]
        if not ids:
            return {}
        payload = b"".join(pack_command(("HGETALL", self._keys.customer(c))) for c in ids)
        replies = self._roundtrip(payload, len(ids))
        out: dict[str, StoredCustomer | None] = {}
        for cid, reply in zip(ids, replies, strict=True):
            if isinstance(reply, Exception):
                raise StoreError(f"HGETALL failed for customer {cid}: {reply}")
            fields = _hash_reply(reply)
            stored = StoredCustomer.from_fields(cid, fields) if fields else None
            out[cid] = stored
            version = fields.get(K.VERSION)
            if stored is not None and version is not None:
                self._note(cid, version, stored.state)
            else:
                self._seen.pop(cid, None)
        return out

    def _note(self, customer_id: str, version: str, state: CustomerState) -> None:
        """Remember the record a customer's hash now holds (least recently noted go first)."""
        if self.remember <= 0:
            return
        seen = self._seen
        seen.pop(customer_id, None)
        seen[customer_id] = (version, state)
        while len(seen) > self.remember:
            del seen[next(iter(seen))]

    def raw_fields(self, customer_id: str) -> dict[str, str]:
        """Every field of a customer's hash, as stored (for tests and debugging)."""
        reply = self._roundtrip(pack_command(("HGETALL", self._keys.customer(customer_id))), 1)[0]
        return _hash_reply(reply)

    def segment_sizes(self) -> dict[int, int]:
        fields = _hash_reply(self._roundtrip(pack_command(("HGETALL", self._keys.segments)), 1)[0])
        n = len(K.SEGMENT_SIZE_PREFIX)
        return {
            int(f[n:]): int(v) for f, v in fields.items() if f.startswith(K.SEGMENT_SIZE_PREFIX)
        }

    def idle_customers(self, before: float, *, limit: int = 1000) -> list[tuple[str, float]]:
        cmd = (
            "ZRANGEBYSCORE", self._keys.last_event_index, "-inf", f"({K.number(before)}",
            "WITHSCORES", "LIMIT", 0, int(limit),
        )  # fmt: skip
        reply = self._roundtrip(pack_command(cmd), 1)[0]
        if isinstance(reply, Exception):
            raise StoreError(f"ZRANGEBYSCORE failed: {reply}")
        if reply and isinstance(reply[0], list):  # RESP3: [[member, score], ...]
            return [(_text(m), float(s)) for m, s in reply]
        it = iter(reply)
        return [(_text(m), float(s)) for m, s in zip(it, it, strict=True)]

    # -- guarded writes -----------------------------------------------------------------------

    def apply_many(self, updates: Sequence[CustomerUpdate]) -> list[WriteResult]:
        seen = self._seen
        num = K.memo_number()  # event_ts, decay_ts, last_ts and the index score often agree

        def record(u: CustomerUpdate, diff: bool = True) -> list[Any]:
            base = seen.get(u.customer_id) if diff else None
            if base is None:
                expect = ""
                pairs, absent = K.state_pairs(u.state, num)
            else:
                expect = base[0]
                pairs, absent = K.state_diff(base[1], u.state, num)
            return [
                "a", num(u.event_ts), len(absent), *absent,
                K.partition_field(u.partition), str(int(u.offset)), K.VERSION, expect,
                K.SEGMENT_ID, str(int(u.segment_id)), K.SEGMENT_NAME, u.segment_name,
                K.MODEL_VERSION, u.model_version, K.UPDATED_AT, num(u.updated_at),
                *pairs,
            ]  # fmt: skip

        return self._guarded(
            updates,
            record,
            last_event_score if self.last_event_index else _none,
            remember=True,
            num=num,
        )

    def put_initial_many(self, seeds: Sequence[CustomerSeed]) -> list[WriteResult]:
        num = K.memo_number()  # as_of and updated_at are the same for a whole publish

        def record(s: CustomerSeed, diff: bool = True) -> list[Any]:
            pairs, absent = K.state_pairs(s.state, num)
            as_of = num(s.as_of)
            return [
                "s", as_of, len(absent), *absent,
                K.AS_OF, as_of, K.VERSION, "",
                K.SEGMENT_ID, str(int(s.segment_id)), K.SEGMENT_NAME, s.segment_name,
                K.MODEL_VERSION, s.model_version, K.UPDATED_AT, num(s.updated_at),
                *pairs,
            ]  # fmt: skip

        return self._guarded(
            seeds,
            record,
            (lambda s: s.state.decay_ts) if self.last_event_index else _none,
            num=num,
        )

    def _guarded(
        self,
        items: Sequence[_Item],
        record_of: Callable[..., list[Any]],
        score_of: Callable[[_Item], float | None],
        *,
        remember: bool = False,
        num: Callable[[float], str] = K.number,
    ) -> list[WriteResult]:
        """Run the guard script over ``items`` (+ the index ZADD) in one round trip.

        Records are built and packed a chunk at a time while Redis runs the chunk before.
        ``record_of(item, diff=False)`` must give the full record: diffs the script refused
        (stored version moved on) are resent that way in a second round trip. Live sizes
        are bumped for the applied writes, also when some calls failed. With ``remember``,
        applied writes are remembered for later diffs; every other written id is forgotten.
        """
        ids = [validate_customer_id(it.customer_id) for it in items]  # all, before any write
        if not items:
            return []
        sha = self._script_sha()
        ttl = str(int(self.ttl_seconds or 0))
        per_call = max(1, self.keys_per_script)
        chunk = per_call * max(1, _CHUNK // per_call)
        base = self._keys.base + ":customer:"
        records: list[tuple[str, list[Any]]] = []
        index: list[str] = []

        def stream() -> Iterator[bytes]:
            for lo in range(0, len(items), chunk):
                part = [(base + it.customer_id, record_of(it)) for it in items[lo : lo + chunk]]
                records.extend(part)
                for it in items[lo : lo + chunk]:
                    score = score_of(it)
                    if score is not None:
                        index.extend((num(score), it.customer_id))
                yield b"".join(_script_command(sha, ttl, g) for g in _chunks(part, per_call))
            if index:
                yield pack_command(("ZADD", self._keys.last_event_index, "GT", *index))

        calls = -(-len(items) // per_call)
        has_index = any(score_of(it) is not None for it in items)
        replies = self._roundtrip(stream(), calls + has_index)
        groups = list(_chunks(records, per_call))
        refused = [
            i
            for i, r in enumerate(replies[:calls])
            if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if refused:  # script cache flushed (restart, SCRIPT FLUSH): reload, resend those calls
            self._sha = None
            sha = self._script_sha()
            again = self._roundtrip(
                b"".join(_script_command(sha, ttl, groups[i]) for i in refused), len(refused)
            )
            for i, r in zip(refused, again, strict=True):
                replies[i] = r
        conflicts = [
            g * per_call + n
            for g, reply in enumerate(replies[:calls])
            if not isinstance(reply, Exception)
            for n in range(len(reply) // 3)
            if reply[3 * n] == 2
        ]
        full: dict[int, list[Any]] = {}
        if conflicts:  # diffs against a version no longer stored: resend those in full
            resend = [(records[i][0], record_of(items[i], diff=False)) for i in conflicts]
            again = self._roundtrip(
                b"".join(_script_command(sha, ttl, [r]) for r in resend), len(conflicts)
            )
            full = {i: r for i, r in zip(conflicts, again, strict=True)}
        results: list[WriteResult | None] = []
        seen = self._seen
        for g, reply in enumerate(replies[:calls]):
            group_ids = ids[g * per_call : (g + 1) * per_call]
            if isinstance(reply, Exception):
                results.extend(None for _ in group_ids)
                for cid in group_ids:
                    seen.pop(cid, None)
                continue
            for n, cid in enumerate(group_ids):
                i = g * per_call + n
                answer = reply[3 * n : 3 * n + 3]
                if i in full:
                    answer = full[i]
                    if isinstance(answer, Exception):
                        replies.append(answer)
                        results.append(None)
                        seen.pop(cid, None)
                        continue
                status, prev, version = answer
                results.append(WriteResult(cid, status == 1, None if prev is None else int(prev)))
                if remember and status == 1:
                    text = version.decode() if isinstance(version, bytes) else str(version)
                    self._note(cid, text, items[i].state)
                else:
                    seen.pop(cid, None)
        # Count what was applied even if some calls failed: a retry would find them skipped.
        done = [(r, it.segment_id) for r, it in zip(results, items, strict=True) if r is not None]
        self._bump_sizes(size_deltas((r for r, _ in done), (seg for _, seg in done)))
        for r in replies:
            if isinstance(r, Exception):
                raise StoreError(f"guarded write failed: {r}")
        return [r for r in results if r is not None]

    def _bump_sizes(self, deltas: Mapping[int, int]) -> None:
        changed = [(seg, d) for seg, d in deltas.items() if d]
        if not changed:
            return
        payload = b"".join(
            pack_command(("HINCRBY", self._keys.segments, K.segment_size_field(seg), d))
            for seg, d in changed
        )
        for reply in self._roundtrip(payload, len(changed)):
            if isinstance(reply, Exception):
                raise StoreError(f"HINCRBY of segment sizes failed: {reply}")

    def put_initial_columns(self, columns: SeedColumns) -> list[WriteResult]:
        """:meth:`put_initial_many` of ``columns``, with new customers created without Lua
        (``HSET`` of a staging key + ``RENAMENX``; :mod:`state.redis_seed`)."""
        from state.redis_seed import put_new_then_guarded  # it builds on this module

        return put_new_then_guarded(self, columns)

    # -- maintenance --------------------------------------------------------------------------

    def recount_segment_sizes(self, *, scan_count: int = 1000) -> dict[int, int]:
        """Rebuild the live sizes from the customer hashes (SCAN; O(customers)).

        Counters of segments that no customer holds are set to 0.
        """
        counts: dict[int, int] = {}
        try:
            batch: list[Any] = []
            for key in self.client.scan_iter(match=self._keys.customer_pattern, count=scan_count):
                batch.append(key)
                if len(batch) >= scan_count:
                    _count_segments(self.client, batch, counts)
                    batch = []
            _count_segments(self.client, batch, counts)
            old = self.segment_sizes()
            mapping = {K.segment_size_field(s): 0 for s in old} | {
                K.segment_size_field(s): n for s, n in counts.items()
            }
            if mapping:
                self.client.hset(self._keys.segments, mapping=mapping)
        except redis.RedisError as exc:
            raise StoreError(f"Redis error recounting segment sizes: {exc}") from exc
        return counts


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_MSGPACK = msgspec.msgpack.Encoder()
_STORE_OPTIONS = ("ttl_seconds", "keys_per_script", "last_event_index", "remember")


def _none(_item: Any) -> None:
    return None


_CHUNK = 128  # customers packed per socket write: Redis works on one while the next is packed
_Item = TypeVar("_Item", CustomerUpdate, CustomerSeed)


def _script_command(sha: str, ttl: str, group: list[tuple[str, list[Any]]]) -> bytes:
    """``EVALSHA sha n key... ttl <msgpack records>`` for one group of customers."""
    return pack_command(
        ("EVALSHA", sha, str(len(group)), *(key for key, _ in group), ttl,
         _MSGPACK.encode([record for _, record in group]))
    )  # fmt: skip


def _count_segments(client: redis.Redis, keys: list[Any], counts: dict[int, int]) -> None:
    if not keys:
        return
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, K.SEGMENT_ID)
    for value in pipe.execute():
        if value is not None:
            seg = int(value)
            counts[seg] = counts.get(seg, 0) + 1
