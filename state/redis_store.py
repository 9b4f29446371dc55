"""The Redis customer store: one pipelined round trip per batch, guarded by a Lua script.

Each customer write is one ``EVALSHA`` of ``guarded_write.lua`` on the customer's key
alone (one hash slot, as Redis Cluster requires), its record one MessagePack argument. A
batch is framed by hand and sent 128 customers per socket write (Redis runs one chunk
while the next is built); the replies are read straight from the socket with hiredis and
dealt with as they arrive, while Redis still runs the later chunks: redis-py's pipeline
object costs more client CPU per command than Redis spends running the script
(docs/benchmarks.md).

Diff writes: the store remembers, for up to ``remember`` customers, the state it last read
or wrote, its segment fields and the record's version (``_v``, bumped by every applied
write: the guard script's and the recency sweep's). An update of a remembered customer
sends only the state fields that changed, the offset and ``updated_at``, and the segment
fields only if they differ from the remembered ones; the script applies it only if the
stored version is still the remembered one. Otherwise it answers "conflict" and the store
resends the full record in a second round trip, so a stale diff is never applied. The
last-event index (``ZADD GT``) rides in the same round trip; live segment sizes
(``HINCRBY``) need the scripts' answers, so they follow in a second, small round trip and
only when some segment changed.

Sizes are counters: a crash between the two round trips loses that batch's changes,
and :meth:`RedisStore.recount_segment_sizes` rebuilds them from the customer hashes.

Connection is lazy (first use); :meth:`close` (or a ``with`` block) closes the client,
also one passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from itertools import islice
from typing import Any, TypeVar

import msgspec
import redis

from state import keys as K
from state.errors import SegstreamError
from state.features import CustomerState
from state.ids import validate_customer_id, validate_customer_ids
from state.store import (
    CustomerSeed,
    CustomerStore,
    CustomerUpdate,
    SeedColumns,
    StoredCustomer,
    WriteResult,
    last_event_score,
)

_hiredis_pack: Callable[..., Any] | None
_Reader: Callable[..., Any] | None
try:  # hiredis is a declared dependency; the fallback keeps the store importable without it
    from hiredis import Reader as _Reader
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover
    _hiredis_pack = _Reader = None

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

    shared_across_processes = True  # redis-py opens new connections in a forked child

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
        self._seen: dict[str, _Remembered] = {}  # id -> (version, state, segment)
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
        return list(self._replies(payload, replies))

    def _replies(self, payload: bytes | Iterable[bytes], replies: int) -> Iterator[Any]:
        """:meth:`_roundtrip`, the replies yielded as they arrive: the caller works on the
        first ones while Redis still runs the commands after them."""
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
            yield from _read_replies(conn, replies)
        except (redis.RedisError, OSError) as exc:
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
                segment = (stored.segment_id, stored.segment_name, stored.model_version)
                self._note(cid, (version, stored.state, *segment))
            else:
                self._seen.pop(cid, None)
        return out

    def _note(self, customer_id: str, record: _Remembered) -> None:
        """Remember the record a customer's hash now holds (least recently noted go first)."""
        if self.remember <= 0:
            return
        seen = self._seen
        seen.pop(customer_id, None)
        seen[customer_id] = record
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        seen = self._seen
        excess = len(seen) - max(0, self.remember)
        if excess > 0:
            for cid in list(islice(seen, excess)):
                del seen[cid]

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
        parts: dict[int, str] = {}  # partition -> its offset field
        state_pairs, state_diff = K.state_pairs, K.state_diff

        def record(u: CustomerUpdate, diff: bool = True) -> list[Any]:
            """The script's record; a diff of a remembered customer leaves out the segment
            fields when they equal the remembered ones (any writer of them bumps ``_v``)."""
            base = seen.get(u.customer_id) if diff else None
            part = parts.get(u.partition)
            if part is None:
                part = parts[u.partition] = K.partition_field(u.partition)
            if base is None:
                pairs, absent = state_pairs(u.state, num)
                expect = ""
            else:
                expect, old, segment_id, segment_name, model_version = base
                pairs, absent = state_diff(old, u.state, num)
                if (
                    segment_id == u.segment_id
                    and segment_name == u.segment_name
                    and model_version == u.model_version
                ):
                    return [
                        "a", num(u.event_ts), len(absent), *absent,
                        part, str(int(u.offset)), K.VERSION, expect,
                        K.UPDATED_AT, num(u.updated_at), *pairs,
                    ]  # fmt: skip
            return [
                "a", num(u.event_ts), len(absent), *absent,
                part, str(int(u.offset)), K.VERSION, expect,
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
        ids = validate_customer_ids([it.customer_id for it in items])  # all, before any write
        if not items:
            return []
        sha = self._script_sha()
        ttl = str(int(self.ttl_seconds or 0))
        per_call = max(1, self.keys_per_script)
        chunk = per_call * max(1, _CHUNK // per_call)
        base = self._keys.base + ":customer:"
        index: list[str] = []

        def stream() -> Iterator[bytes]:
            nonlocal index
            encode = _MSGPACK.encode
            head, tail = _one_key_frame(sha, ttl)
            for lo in range(0, len(items), chunk):
                part = items[lo : lo + chunk]
                if per_call == 1:  # the default: frame each call here (cheaper than packing)
                    cmds = []
                    for it in part:  # (records are rebuilt if a call must be resent)
                        rec = encode([record_of(it)])
                        cmds.append(_one_key_command(head, base + it.customer_id, tail, rec))
                        score = score_of(it)
                        if score is not None:
                            index += (num(score), it.customer_id)
                    yield b"".join(cmds)
                    continue
                group = [(base + it.customer_id, record_of(it)) for it in part]
                for it in part:
                    score = score_of(it)
                    if score is not None:
                        index += (num(score), it.customer_id)
                yield b"".join(_script_command(sha, ttl, g) for g in _chunks(group, per_call))
            if index:
                yield pack_command(("ZADD", self._keys.last_event_index, "GT", *index))

        calls = -(-len(items) // per_call)
        has_index = any(score_of(it) is not None for it in items)
        after: list[Any] = []  # the index ZADD's reply
        again: list[int] = []  # items to send again, one by one in full (see answers())

        def answers() -> Iterator[tuple[int, Any]]:
            """``(item, [status, previous segment_id, version] or the call's error)``, read
            as they arrive (the loop below works while Redis runs later chunks); then the
            answers for ``again``: diffs the script refused (the stored version moved on)
            and calls that found the script cache flushed (restart, ``SCRIPT FLUSH``)."""
            nonlocal sha
            replies = self._replies(stream(), calls + has_index)
            if per_call == 1:
                yield from enumerate(islice(replies, calls))
            else:
                for g, reply in enumerate(islice(replies, calls)):
                    lo = g * per_call
                    if isinstance(reply, Exception):
                        yield from ((i, reply) for i in range(lo, min(len(items), lo + per_call)))
                    else:
                        yield from (
                            (lo + k, reply[3 * k : 3 * k + 3]) for k in range(len(reply) // 3)
                        )
            after.extend(replies)
            if not again:
                return
            if any(type(answer_of[i]) is redis.exceptions.NoScriptError for i in again):
                self._sha = None
                sha = self._script_sha()
            resend = [(base + ids[i], record_of(items[i], diff=False)) for i in again]
            payload = b"".join(_script_command(sha, ttl, [r]) for r in resend)
            for i, answer in zip(list(again), self._replies(payload, len(again)), strict=True):
                if type(answer) is not list or answer[0] == 2:  # full records are never refused
                    answer = StoreError(f"resent in full: {answer}")
                yield i, answer

        results: list[WriteResult | None] = [None] * len(items)
        answer_of: dict[int, Any] = {}  # first answers of the items in ``again``
        seen = self._seen
        remember = remember and self.remember > 0
        failed: list[Any] = []
        deltas: dict[int, int] = {}  # live segment sizes (as state.store.size_deltas)
        for i, answer in answers():
            cid = ids[i]
            if type(answer) is not list or answer[0] == 2:
                if i not in answer_of and (
                    type(answer) is redis.exceptions.NoScriptError or type(answer) is list
                ):
                    answer_of[i] = answer
                    again.append(i)
                else:  # the call's error
                    failed.append(answer)
                    seen.pop(cid, None)
                continue
            status, prev, version = answer
            if prev is not None:
                prev = int(prev)
            results[i] = WriteResult(cid, status == 1, prev)
            it = items[i]
            if remember and status == 1:
                seen.pop(cid, None)
                text = str(version) if type(version) is int else _text(version)
                seen[cid] = (text, it.state, it.segment_id, it.segment_name, it.model_version)
            else:
                seen.pop(cid, None)
            if status == 1 and prev != it.segment_id:
                new = it.segment_id
                if prev is not None:
                    deltas[prev] = deltas.get(prev, 0) - 1
                deltas[new] = deltas.get(new, 0) + 1
        self._forget_oldest()
        # Count what was applied even if some calls failed: a retry would find them skipped.
        self._bump_sizes(deltas)
        for r in failed + after:
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
        (``RESTORE`` of the serialised hash; :mod:`state.redis_seed`)."""
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
_Remembered = tuple[str, CustomerState, Any, Any, Any]
"""What the store remembers of a customer's hash: ``_v``, the state, and the segment fields
(``segment_id``, ``segment_name``, ``model_version``); one flat tuple (fewer objects for
the garbage collector to visit)."""


def _one_key_frame(sha: str, ttl: str) -> tuple[bytes, bytes]:
    """The fixed parts of ``EVALSHA sha 1 <key> ttl <record>`` around the key (RESP)."""
    head = pack_command(("EVALSHA", sha, "1"))
    ttl_bulk = pack_command((ttl,))
    return b"*6" + head[2:], ttl_bulk[ttl_bulk.index(b"\r\n") + 2 :]


def _one_key_command(head: bytes, key: str, tail: bytes, blob: bytes) -> bytes:
    """``EVALSHA sha 1 key ttl [record]``: :func:`_script_command` of one customer, framed
    by hand (``key`` is ASCII: customer ids are; a unit test pins the two equal)."""
    return b"%s$%d\r\n%s\r\n%s$%d\r\n%s\r\n" % (
        head, len(key), key.encode(), tail, len(blob), blob
    )  # fmt: skip


def _reply_error(message: str) -> redis.ResponseError:
    """An error reply as the exception redis-py would raise (kept as a value)."""
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    return redis.ResponseError(message)


_MORE = object()  # hiredis: no complete reply buffered yet


def _read_replies(conn: Any, count: int) -> Iterator[Any]:
    """The next ``count`` replies on a connection that is at a reply boundary (the pool
    checks that no data is pending), as they arrive; error replies as exception values.

    With hiredis and RESP2, a bare ``hiredis.Reader`` on the socket: redis-py's
    ``read_response`` costs more per reply than our whole result loop (docs/benchmarks.md).
    """
    sock = getattr(conn, "_sock", None)
    if _Reader is None or sock is None or getattr(conn, "protocol", 2) not in (2, "2", None):
        for _ in range(count):  # pragma: no cover - the plain path, kept for other set-ups
            try:
                yield conn.read_response()
            except redis.ResponseError as exc:  # the reply was read; the stream is in step
                yield exc
        return  # pragma: no cover
    reader = _Reader(replyError=_reply_error, notEnoughData=_MORE)
    gets = reader.gets
    buf = bytearray(1 << 16)
    left = count
    while left > 0:
        got = sock.recv_into(buf)
        if not got:
            raise redis.ConnectionError("Connection closed by server.")
        reader.feed(buf, 0, got)
        reply = gets()
        while reply is not _MORE:
            yield reply
            left -= 1
            if not left:  # never past the replies asked for
                return
            reply = gets()


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
