"""The publish's fast path on a real Redis: new customers are created without Lua
(RESTORE of a serialised hash), exactly as the guarded script would have written them;
existing ones still go through the guard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state import keys as K
from state import redis_seed
from state.errors import InvalidCustomerId
from state.features import CustomerState
from state.redis_seed import dump_hashes
from state.redis_store import RedisStore
from state.store import CustomerUpdate
from tests.unit.test_keys import states
from tests.unit.test_seed_columns import columns_of

pytestmark = pytest.mark.integration


@pytest.fixture
def strict_redis(redis_client: Any) -> Iterator[Any]:
    """The session's Redis checking every RESTORE payload in depth (``sanitize-dump-payload
    yes``): a malformed serialisation is refused instead of loaded."""
    before = redis_client.config_get("sanitize-dump-payload")["sanitize-dump-payload"]
    redis_client.config_set("sanitize-dump-payload", "yes")
    yield redis_client
    redis_client.config_set("sanitize-dump-payload", before)


@pytest.fixture
def stores(redis_url: str, strict_redis: Any, unique: Any) -> Iterator[tuple[Any, ...]]:
    """Two stores on one server under two prefixes (columns / rows) and the raw client."""
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as cols,
        RedisStore.from_url(redis_url, prefix=unique.prefix + "-rows") as rows,
    ):
        yield cols, rows, strict_redis


def without_version(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != K.VERSION}


@given(st.lists(states, min_size=1, max_size=5))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_new_customers_get_the_hash_the_guarded_script_writes(
    stores: tuple[Any, ...], rows: list[CustomerState]
) -> None:
    fast, slow, client = stores
    client.delete(*(fast._keys.customer(f"c{i}") for i in range(5)))
    client.delete(*(slow._keys.customer(f"c{i}") for i in range(5)))
    cols = columns_of(rows)
    assert fast.put_initial_columns(cols) == slow.put_initial_many(cols.seeds())
    for cid in cols.customer_ids:
        got, want = fast.raw_fields(cid), slow.raw_fields(cid)
        assert without_version(got) == without_version(want)
        assert list(got) == list(want)  # same field order: HGETALL reads the same
        assert int(got[K.VERSION]) > 1_700_000_000 * 10**6  # the server clock in µs
        assert client.object("encoding", fast._keys.customer(cid)) == b"listpack"


def test_sizes_index_and_ttl_follow_a_fast_publish(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    rows = [CustomerState(orders=1, decay_ts=1_700_000_000.0 + i) for i in range(7)]
    with RedisStore.from_url(redis_url, prefix=unique.prefix, ttl_seconds=3600) as store:
        results = store.put_initial_columns(columns_of(rows))
        assert [r.applied for r in results] == [True] * 7
        assert all(r.previous_segment_id is None for r in results)
        assert store.segment_sizes() == {0: 3, 1: 2, 2: 2}
        assert [c for c, _ in store.idle_customers(2e9)] == [f"c{i}" for i in range(7)]
        assert 0 < redis_client.ttl(store._keys.customer("c3")) <= 3600


def test_existing_customers_keep_the_guard(redis_url: str, redis_client: Any, unique: Any) -> None:
    """A customer the consumer already moved past as_of is not overwritten; a re-run of
    the same publish changes nothing, not even the write version; sizes stay right."""
    rows = [CustomerState(orders=1, decay_ts=1_749_999_000.0) for _ in range(3)]
    cols = columns_of(rows)
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        store.put_initial_columns(cols)
        store.apply_many(
            [
                CustomerUpdate(
                    customer_id="c1", state=CustomerState(orders=2, decay_ts=1_750_000_500.0),
                    segment_id=2, segment_name="seg2", model_version="m1",
                    updated_at=1_750_000_501.0, partition=0, offset=9, event_ts=1_750_000_500.0,
                )
            ]
        )  # fmt: skip
        before = {c: store.raw_fields(c) for c in cols.customer_ids}
        again = store.put_initial_columns(cols)
        assert [r.applied for r in again] == [True, False, True]
        assert {c: store.raw_fields(c) for c in cols.customer_ids} == before
        assert store.get("c1").state.orders == 2
        assert {s: n for s, n in store.segment_sizes().items() if n} == {0: 1, 2: 2}


def test_a_customer_created_between_the_round_trips_goes_through_the_guard(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    """RESTORE answers BUSYKEY when a consumer created the hash after the EXISTS check:
    the guarded seed decides (here: the event is later, skip)."""
    cols = columns_of([CustomerState(orders=1, decay_ts=1_749_999_000.0)] * 2)
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        real = store._roundtrip
        calls = []

        def racing(payload: Any, replies: int) -> list[Any]:
            out = real(payload, replies)
            if not calls:  # right after the EXISTS round trip, a consumer writes c0
                redis_client.hset(
                    store._keys.customer("c0"),
                    mapping={"orders": "7", "decay_ts": "1750000900", "segment_id": "2"},
                )
            calls.append(replies)
            return out

        store._roundtrip = racing  # type: ignore[method-assign]
        results = store.put_initial_columns(cols)
        assert [(r.applied, r.previous_segment_id) for r in results] == [(False, 2), (True, None)]
        assert store.raw_fields("c0")["orders"] == "7"
        assert store.segment_sizes() == {1: 1}


def test_the_payload_is_what_dump_gives(strict_redis: Any, unique: Any) -> None:
    """Byte for byte Redis' own DUMP of the same hash (text values, so that Redis keeps
    them as strings; no compression), but for the RDB version and hence the CRC."""
    key = f"{unique.prefix}:dump"
    pairs = [(b"segment_name", b"High-Spenders"), (b"gross", b"12.50"), (b"x" * 70, b"y" * 200)]
    config = {"rdbcompression": "no", "hash-max-listpack-value": "256"}  # long values stay
    before = {name: strict_redis.config_get(name)[name] for name in config}
    for name, value in config.items():
        strict_redis.config_set(name, value)
    try:
        strict_redis.hset(key, mapping=dict(pairs))
        theirs = strict_redis.dump(key)
    finally:
        for name, value in before.items():
            strict_redis.config_set(name, value)
    ours = dump_hashes([(f, pa.array([v.decode()])) for f, v in pairs])[0].as_py()
    assert ours[:-10] == theirs[:-10]
    assert strict_redis.restore(f"{key}:copy", 0, ours)
    assert strict_redis.hgetall(f"{key}:copy") == dict(pairs)


def test_customers_the_fast_path_cannot_take_go_through_the_guard(
    redis_url: str,
    strict_redis: Any,
    unique: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A text value too long for it, or a server that refuses the serialisation (here: an
    RDB version from the future): the guarded script writes them, with the same result."""
    rows = [CustomerState(orders=1, gender="F" * 300), CustomerState(orders=2, gender="M")]
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        assert [r.applied for r in store.put_initial_columns(columns_of(rows))] == [True, True]
        assert store.raw_fields("c0")["gender"] == "F" * 300
        monkeypatch.setattr(redis_seed, "_RDB_VERSION", 99)
        cols = columns_of(rows, customer_ids=["d0", "d1"])
        assert [r.applied for r in store.put_initial_columns(cols)] == [True, True]
        assert store.get("d1").state == rows[1]
        assert "refused 1 seed payloads" in caplog.text  # d0 never tried: gender too long
        assert store.segment_sizes() == {0: 2, 1: 2}


@pytest.mark.parametrize("bad", ["not ok", "", 7, "x" * 65])
def test_invalid_ids_are_refused_before_anything_is_written(
    redis_url: str, redis_client: Any, unique: Any, bad: object
) -> None:
    cols = columns_of([CustomerState(orders=1)] * 2, customer_ids=["good", bad])
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        with pytest.raises(InvalidCustomerId):
            store.put_initial_columns(cols)
        assert store.get("good") is None
