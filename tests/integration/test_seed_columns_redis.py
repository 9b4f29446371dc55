"""The publish's fast path on a real Redis: new customers are created without Lua
(staging hash + RENAMENX), exactly as the guarded script would have written them;
existing ones still go through the guard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state import keys as K
from state.features import CustomerState
from state.redis_store import RedisStore
from state.store import CustomerUpdate
from tests.unit.test_keys import states
from tests.unit.test_seed_columns import columns_of

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(redis_url: str, redis_client: Any, unique: Any) -> Iterator[tuple[Any, ...]]:
    """Two stores on one server under two prefixes (columns / rows) and the raw client."""
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as cols,
        RedisStore.from_url(redis_url, prefix=unique.prefix + "-rows") as rows,
    ):
        yield cols, rows, redis_client


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
        assert not client.exists(fast._keys.seed_staging(cid))


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
    """RENAMENX answers 0 when a consumer created the hash after the EXISTS check: the
    staging key is dropped and the guarded seed decides (here: the event is later, skip)."""
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
        assert not redis_client.exists(store._keys.seed_staging("c0"))
        assert store.segment_sizes() == {1: 1}


def test_a_staging_hash_left_by_a_crashed_publish_is_replaced(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as store:
        redis_client.hset(store._keys.seed_staging("c0"), mapping={"age": "99", "orders": "5"})
        store.put_initial_columns(columns_of([CustomerState(orders=1)]))
        assert "age" not in store.raw_fields("c0")
        assert store.raw_fields("c0")["orders"] == "1"
        assert not redis_client.exists(store._keys.seed_staging("c0"))
