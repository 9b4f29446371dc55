"""The CustomerStore contract, run against both stores: InMemoryStore and RedisStore.

The Redis parameter is an integration test (a real server from tests/conftest.py); the
in-memory one needs nothing. Both must behave identically, down to the stored fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from state import keys as K
from state.errors import InvalidCustomerId
from state.features import CustomerState
from state.redis_store import RedisStore
from state.store import CustomerSeed, CustomerStore, CustomerUpdate, InMemoryStore, WriteResult


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    request.getfixturevalue("redis_client")  # deletes this test's keys afterwards
    unique = request.getfixturevalue("unique")
    with RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=unique.prefix) as s:
        yield s


RICH = CustomerState(
    orders=3,
    refunds=1,
    gross_cents=101250,
    refunded_cents=1999,
    discount_cents=500,
    items=7,
    first_ts=1_750_000_000.0,
    last_ts=1_750_005_306.891,
    spend_decayed=98765.4321,
    orders_decayed=2.75,
    decay_ts=1_750_005_306.891,
    age=41.0,
    gender="F",
    annual_income=52900.0,
    profile_ts=1_750_000_000.0,
)


def update(cid: str = "c1", *, offset: int = 1, partition: int = 0, **kw: Any) -> CustomerUpdate:
    values: dict[str, Any] = {
        "customer_id": cid,
        "state": CustomerState(orders=offset),
        "segment_id": 1,
        "segment_name": "Loyal",
        "model_version": "m1",
        "updated_at": 1_750_000_100.0,
        "partition": partition,
        "offset": offset,
        "event_ts": 1_750_000_000.0 + offset,
    }
    return CustomerUpdate(**(values | kw))


def seed(cid: str = "c1", *, as_of: float = 1_750_000_000.0, **kw: Any) -> CustomerSeed:
    values: dict[str, Any] = {
        "customer_id": cid,
        "state": CustomerState(orders=5, decay_ts=as_of - 10, last_ts=as_of - 10, first_ts=1.0),
        "segment_id": 2,
        "segment_name": "Big spenders",
        "model_version": "m0",
        "updated_at": as_of + 1,
        "as_of": as_of,
    }
    return CustomerSeed(**(values | kw))


def applied(results: list[WriteResult]) -> list[bool]:
    return [r.applied for r in results]


# -- reads ------------------------------------------------------------------------------------


def test_unknown_customers_read_as_none(store: CustomerStore) -> None:
    assert store.get_many(["nobody", "nobody-2"]) == {"nobody": None, "nobody-2": None}
    assert store.get_many([]) == {}
    assert store.get("nobody") is None


def test_invalid_ids_are_refused_before_anything_is_written(store: CustomerStore) -> None:
    with pytest.raises(InvalidCustomerId):
        store.get_many(["ok", "not ok"])
    with pytest.raises(InvalidCustomerId):
        store.apply_many([update("good"), update("bad id")])
    with pytest.raises(InvalidCustomerId):
        store.put_initial_many([seed("good"), seed("")])
    assert store.get("good") is None


def test_a_written_customer_reads_back_exactly(store: Any) -> None:
    store.apply_many([update("C000061", state=RICH, segment_name="Stammkunden ✓", offset=41)])
    got = store.get("C000061")
    assert got.state == RICH
    assert (got.segment_id, got.segment_name, got.model_version) == (1, "Stammkunden ✓", "m1")
    assert got.updated_at == 1_750_000_100.0
    assert got.offsets == {0: 41}
    assert got.as_of is None


def test_the_hash_holds_the_documented_fields_and_formats(store: Any) -> None:
    store.apply_many([update("C000061", state=RICH, offset=41, partition=3)])
    fields = store.raw_fields("C000061")
    assert int(fields.pop("_v")) > 0  # Redis: its clock in µs; in memory: 1
    assert fields == {
        "segment_id": "1",
        "segment_name": "Loyal",
        "model_version": "m1",
        "updated_at": "1750000100",
        "orders": "3",
        "refunds": "1",
        "gross": "1012.50",
        "refunded": "19.99",
        "discount": "5.00",
        "items": "7",
        "first_ts": "1750000000",
        "last_ts": "1750005306.891",
        "spend_decayed": "98765.4321",
        "orders_decayed": "2.75",
        "decay_ts": "1750005306.891",
        "age": "41",
        "gender": "F",
        "annual_income": "52900",
        "profile_ts": "1750000000",
        "_p3": "41",
    }


# -- the guard --------------------------------------------------------------------------------


def test_an_offset_at_or_below_the_stored_one_is_skipped(store: CustomerStore) -> None:
    assert applied(store.apply_many([update(offset=5)])) == [True]
    assert applied(store.apply_many([update(offset=5), update(offset=4)])) == [False, False]
    assert applied(store.apply_many([update(offset=6)])) == [True]
    assert store.get("c1").state.orders == 6  # type: ignore[union-attr]


def test_partitions_are_guarded_independently(store: CustomerStore) -> None:
    store.apply_many([update(offset=100, partition=0)])
    assert applied(store.apply_many([update(offset=3, partition=1)])) == [True]
    assert store.get("c1").offsets == {0: 100, 1: 3}  # type: ignore[union-attr]


def test_events_at_or_before_the_snapshot_are_skipped(store: CustomerStore) -> None:
    store.put_initial_many([seed(as_of=1000.0)])
    out = store.apply_many([update(offset=1, event_ts=999.0), update(offset=2, event_ts=1000.0)])
    assert applied(out) == [False, False]
    assert applied(store.apply_many([update(offset=3, event_ts=1000.5)])) == [True]
    got = store.get("c1")
    assert got is not None and got.as_of == 1000.0 and got.state.orders == 3


def test_results_follow_input_order_and_report_the_previous_segment(store: CustomerStore) -> None:
    out = store.apply_many(
        [update("a", offset=1), update("b", offset=1, segment_id=2), update("a", offset=1)]
    )
    assert out == [
        WriteResult("a", True, None),
        WriteResult("b", True, None),
        WriteResult("a", False, 1),
    ]
    out = store.apply_many([update("a", offset=2, segment_id=3)])
    assert out == [WriteResult("a", True, 1)]


def test_stored_customer_accepts_what_the_guard_accepts(store: CustomerStore) -> None:
    store.put_initial_many([seed(as_of=1000.0)])
    store.apply_many([update(offset=7, event_ts=2000.0)])
    got = store.get("c1")
    assert got is not None
    for partition, offset, ts in [(0, 7, 3000.0), (0, 8, 1000.0), (0, 8, 3000.0), (1, 0, 1001.0)]:
        expect = got.accepts(partition=partition, offset=offset, event_ts=ts)
        probe = update(offset=offset, partition=partition, event_ts=ts)
        assert applied(store.apply_many([probe])) == [expect]
        got = store.get("c1")
        assert got is not None


def test_unknown_values_are_removed_when_a_write_no_longer_has_them(store: Any) -> None:
    store.apply_many([update(state=RICH, offset=1)])
    store.apply_many([update(state=CustomerState(orders=1), offset=2)])
    fields = store.raw_fields("c1")
    assert not {"age", "gender", "first_ts", "decay_ts"} & fields.keys()
    assert store.get("c1").state == CustomerState(orders=1)


# -- offline seeds ----------------------------------------------------------------------------


def test_seeding_is_idempotent_and_keeps_offsets(store: CustomerStore) -> None:
    store.apply_many([update(offset=9, event_ts=500.0)])
    first = store.put_initial_many([seed(as_of=1000.0)])
    again = store.put_initial_many([seed(as_of=1000.0)])
    assert applied(first) == applied(again) == [True]
    got = store.get("c1")
    assert got is not None
    assert (got.state.orders, got.segment_id, got.as_of, got.offsets) == (5, 2, 1000.0, {0: 9})
    assert store.segment_sizes() == {1: 0, 2: 1}


def test_an_older_snapshot_never_replaces_a_newer_one(store: CustomerStore) -> None:
    store.put_initial_many([seed(as_of=2000.0)])
    assert applied(store.put_initial_many([seed(as_of=1000.0, segment_id=9)])) == [False]
    assert store.get("c1").as_of == 2000.0  # type: ignore[union-attr]


def test_a_snapshot_never_erases_events_applied_after_it(store: CustomerStore) -> None:
    late = CustomerState(orders=8, decay_ts=1500.0)
    store.apply_many([update(offset=1, event_ts=1500.0, state=late)])
    assert applied(store.put_initial_many([seed(as_of=1000.0)])) == [False]
    assert store.get("c1").state == late  # type: ignore[union-attr]


# -- segment sizes and the recency index ------------------------------------------------------


def test_live_sizes_count_applied_changes_only(store: CustomerStore) -> None:
    store.put_initial_many([seed("a"), seed("b"), seed("c", segment_id=1)])
    assert store.segment_sizes() == {1: 1, 2: 2}
    store.apply_many(
        [
            update("a", offset=1, event_ts=2e9, segment_id=1),  # 2 -> 1
            update("b", offset=1, event_ts=1.0, segment_id=1),  # before as_of: skipped
            update("d", offset=1, segment_id=3),  # new customer
            update("d", offset=1, segment_id=1),  # duplicate: skipped
        ]
    )
    assert store.segment_sizes() == {1: 2, 2: 1, 3: 1}


def test_idle_customers_come_oldest_first_and_only_move_forward(store: CustomerStore) -> None:
    store.apply_many(
        [
            update("x", offset=1, event_ts=300.0),
            update("y", offset=1, event_ts=100.0),
            update("z", offset=1, event_ts=200.0),
        ]
    )
    store.apply_many([update("y", offset=0, event_ts=50.0)])  # stale: index does not go back
    assert store.idle_customers(1000.0) == [("y", 100.0), ("z", 200.0), ("x", 300.0)]
    assert store.idle_customers(250.0, limit=1) == [("y", 100.0)]
    assert store.idle_customers(100.0) == []


def test_empty_batches_do_nothing(store: CustomerStore) -> None:
    assert store.apply_many([]) == []
    assert store.put_initial_many([]) == []
    assert store.segment_sizes() == {}


# -- Redis only -------------------------------------------------------------------------------


@pytest.fixture
def redis_store(redis_url: str, redis_client: Any, unique: Any) -> Iterator[RedisStore]:
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as s:
        yield s


@pytest.mark.integration
def test_keys_have_the_documented_types(redis_store: RedisStore) -> None:
    redis_store.apply_many([update("C1", offset=1)])
    keys = K.Keys(redis_store.prefix)
    client = redis_store.client
    assert client.type(keys.customer("C1")) == b"hash"
    assert client.type(keys.last_event_index) == b"zset"
    assert client.type(keys.segments) == b"hash"
    assert client.object("encoding", keys.customer("C1")) == b"listpack"


@pytest.mark.integration
def test_ttl_is_set_on_every_applied_write(redis_url: str, redis_client: Any, unique: Any) -> None:
    with RedisStore.from_url(redis_url, prefix=unique.prefix, ttl_seconds=3600) as s:
        s.apply_many([update("t1", offset=1)])
        s.put_initial_many([seed("t2")])
        keys = K.Keys(unique.prefix)
        assert 0 < redis_client.ttl(keys.customer("t1")) <= 3600
        assert 0 < redis_client.ttl(keys.customer("t2")) <= 3600


@pytest.mark.integration
def test_the_recency_index_can_be_left_out(redis_url: str, redis_client: Any, unique: Any) -> None:
    with RedisStore.from_url(redis_url, prefix=unique.prefix, last_event_index=False) as s:
        assert applied(s.apply_many([update(offset=1)])) == [True]
        s.put_initial_many([seed("c2")])
        assert s.idle_customers(2e9) == []
        assert not redis_client.exists(K.Keys(unique.prefix).last_event_index)
        assert s.get("c1").state.orders == 1  # type: ignore[union-attr]


@pytest.mark.integration
def test_a_flushed_script_cache_is_reloaded_transparently(
    redis_store: RedisStore, redis_client: Any
) -> None:
    redis_store.apply_many([update(offset=1)])
    redis_client.script_flush()
    assert applied(redis_store.apply_many([update(offset=2), update(offset=2)])) == [True, False]
    assert redis_store.get("c1").offsets == {0: 2}  # type: ignore[union-attr]


@pytest.mark.integration
def test_many_keys_per_script_call_behave_the_same(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    ups = [update(f"k{i % 7}", offset=i // 7 + (i % 3 == 0)) for i in range(40)]
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as one,
        RedisStore.from_url(redis_url, prefix=unique.prefix + "-b", keys_per_script=16) as many,
    ):
        assert one.apply_many(ups) == many.apply_many(ups)
        ids = [f"k{i}" for i in range(7)]
        assert one.get_many(ids) == many.get_many(ids)
        assert one.segment_sizes() == many.segment_sizes()
    for key in redis_client.scan_iter(match=f"{unique.prefix}-b*"):
        redis_client.delete(key)


@pytest.mark.integration
def test_a_failed_call_still_counts_the_writes_that_were_applied(
    redis_store: RedisStore, redis_client: Any
) -> None:
    from state.redis_store import StoreError

    redis_client.set(K.Keys(redis_store.prefix).customer("broken"), "not a hash")
    batch = [update("g1", segment_id=1), update("broken"), update("g2", segment_id=2)]
    with pytest.raises(StoreError, match="WRONGTYPE"):
        redis_store.apply_many(batch)
    assert redis_store.segment_sizes() == {1: 1, 2: 1}
    assert applied(redis_store.apply_many([batch[0], batch[2]])) == [False, False]
    assert redis_store.segment_sizes() == {1: 1, 2: 1}


@pytest.mark.integration
def test_recount_rebuilds_lost_size_counters(redis_store: RedisStore, redis_client: Any) -> None:
    redis_store.put_initial_many([seed("a"), seed("b"), seed("c", segment_id=1)])
    keys = K.Keys(redis_store.prefix)
    redis_client.hset(keys.segments, mapping={"size:2": 99, "size:7": 3})  # drifted
    assert redis_store.recount_segment_sizes() == {1: 1, 2: 2}
    assert redis_store.segment_sizes() == {1: 1, 2: 2, 7: 0}


def test_every_applied_write_bumps_the_version_and_skipped_ones_do_not(store: Any) -> None:
    store.put_initial_many([seed(as_of=1000.0)])
    created = int(store.raw_fields("c1")["_v"])
    store.apply_many([update(offset=1, event_ts=2000.0), update(offset=1, event_ts=2000.0)])
    first = int(store.raw_fields("c1")["_v"])
    store.apply_many([update(offset=0, event_ts=2000.0), update(offset=2, event_ts=500.0)])
    assert int(store.raw_fields("c1")["_v"]) == first == created + 1


def test_a_repeated_seed_changes_nothing_not_even_the_version(store: Any) -> None:
    store.put_initial_many([seed(state=RICH, as_of=2e9)])
    before = store.raw_fields("c1")
    created = int(before["_v"])
    assert applied(store.put_initial_many([seed(state=RICH, as_of=2e9)])) == [True]
    assert store.raw_fields("c1") == before
    store.put_initial_many([seed(state=dataclasses.replace(RICH, age=None), as_of=2e9)])
    after = store.raw_fields("c1")
    assert int(after["_v"]) == created + 1 and "age" not in after


DIFF_STATES = [
    RICH,
    dataclasses.replace(RICH, orders=4, gross_cents=111250, last_ts=1_750_009_000.5),
    CustomerState(orders=4, spend_decayed=-0.0, decay_ts=1_750_009_001.0),
    dataclasses.replace(RICH, spend_decayed=0.0, gender=None, age=42.0),
    dataclasses.replace(RICH, spend_decayed=-0.0, first_ts=None),
]


@pytest.mark.integration
def test_diff_writes_leave_the_same_hash_as_full_writes(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    """The store remembers what it wrote and sends only changed fields: same end result."""
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as diffs,
        RedisStore.from_url(redis_url, prefix=unique.prefix + "-f", remember=0) as full,
    ):
        for n, state in enumerate(DIFF_STATES, start=1):
            up = update("d1", state=state, offset=n, segment_id=n % 2)
            assert diffs.apply_many([up]) == full.apply_many([up])
            if n == 1:  # each hash started at its own clock reading
                versions = int(diffs.raw_fields("d1")["_v"]) - int(full.raw_fields("d1")["_v"])
            got, want = diffs.raw_fields("d1"), full.raw_fields("d1")
            assert int(got.pop("_v")) - int(want.pop("_v")) == versions  # both +1 per write
            assert got == want
            assert diffs.get("d1") == full.get("d1")
            assert repr(diffs.get("d1").state) == repr(state)  # type: ignore[union-attr]
    for key in redis_client.scan_iter(match=f"{unique.prefix}-f*"):
        redis_client.delete(key)


@pytest.mark.integration
def test_a_stale_diff_is_never_applied_the_full_record_is_sent_instead(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    """Two writers of one customer (a fenced consumer): each remembers an older record."""
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as a,
        RedisStore.from_url(redis_url, prefix=unique.prefix) as b,
    ):
        a.apply_many([update(state=RICH, offset=1)])
        v1 = int(b.raw_fields("c1")["_v"])
        b.get("c1")  # b remembers version v1
        a.apply_many([update(state=DIFF_STATES[1], offset=2)])  # version v1 + 1, unknown to b
        # b's write is newer by offset: it must apply, and leave exactly b's full record
        assert applied(b.apply_many([update(state=DIFF_STATES[3], offset=3)])) == [True]
        got = b.raw_fields("c1")
        assert K.decode_state(got) == DIFF_STATES[3]
        assert "gender" not in got and got["orders"] == "3" and int(got["_v"]) == v1 + 2
        # a still remembers version 2: its diff is refused by the script and resent in full
        assert applied(a.apply_many([update(state=DIFF_STATES[2], offset=4)])) == [True]
        assert a.get("c1").state == DIFF_STATES[2]  # type: ignore[union-attr]
        assert int(a.raw_fields("c1")["_v"]) == v1 + 3


@pytest.mark.integration
def test_diffs_survive_an_expired_or_deleted_hash(
    redis_store: RedisStore, redis_client: Any
) -> None:
    redis_store.apply_many([update(state=RICH, offset=1)])
    redis_client.delete(K.Keys(redis_store.prefix).customer("c1"))
    assert applied(redis_store.apply_many([update(state=DIFF_STATES[1], offset=2)])) == [True]
    assert redis_store.get("c1").state == DIFF_STATES[1]  # type: ignore[union-attr]


@pytest.mark.integration
def test_a_hash_written_again_after_deletion_never_repeats_a_version(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    """An old remembered version can never match a new incarnation of the hash (no ABA)."""
    key = K.Keys(unique.prefix).customer("c1")
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as old,
        RedisStore.from_url(redis_url, prefix=unique.prefix) as other,
    ):
        old.apply_many([update(state=RICH, offset=1)])
        old.apply_many([update(state=DIFF_STATES[1], offset=2)])  # old remembers this version
        seen = int(redis_client.hget(key, "_v"))
        redis_client.delete(key)
        for n in range(3):
            other.apply_many([update(state=DIFF_STATES[3], offset=3 + n, partition=1)])
        assert int(redis_client.hget(key, "_v")) > seen
        sec, usec = redis_client.time()  # a new hash starts at the server clock, in µs
        assert int(redis_client.hget(key, "_v")) - 2 <= sec * 10**6 + usec
        assert applied(old.apply_many([update(state=DIFF_STATES[2], offset=9)])) == [True]
        assert old.get("c1").state == DIFF_STATES[2]  # type: ignore[union-attr]


def test_an_unreachable_redis_is_a_store_error() -> None:
    from state.devstack import free_port
    from state.redis_store import StoreError

    with RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1) as s:
        with pytest.raises(StoreError, match="Redis"):
            s.get_many(["c1"])
        with pytest.raises(StoreError, match="Redis"):
            s.apply_many([update()])
