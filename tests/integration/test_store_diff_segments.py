"""Diff writes leave out segment fields that did not change; every other writer bumps ``_v``.

A remembered record must never be stale while its version stands still: the recency sweep
(the only other writer of segment fields) bumps ``_v`` in the same script call, so a diff
computed from the record before the sweep is refused and resent in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from consumer.sweep import SWEEP_WRITE
from state import keys as K
from state.redis_store import RedisStore
from tests.integration.test_store_contract import DIFF_STATES, RICH, update

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_store(redis_url: str, redis_client: Any, unique: Any) -> Iterator[RedisStore]:
    with RedisStore.from_url(redis_url, prefix=unique.prefix) as s:
        yield s


def sweep_write(client: Any, key: str, decay_ts: float, segment: tuple[int, str]) -> list[Any]:
    """What :class:`consumer.sweep.RecencySweep` sends for one moved customer."""
    args = [K.number(decay_ts), segment[0], segment[1], "m1", K.number(1_760_000_000.0)]
    return list(client.register_script(SWEEP_WRITE)(keys=[key], args=args))


def test_diffs_with_an_unchanged_segment_leave_the_same_hash_as_full_writes(
    redis_url: str, redis_client: Any, unique: Any
) -> None:
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix) as diffs,
        RedisStore.from_url(redis_url, prefix=unique.prefix + "-f", remember=0) as full,
    ):
        for n, state in enumerate(DIFF_STATES * 2, start=1):
            segment_id = 1 if n < 4 or n > 6 else 2  # the same segment for runs of writes
            up = update("d1", state=state, offset=n, segment_id=segment_id, updated_at=n + 0.5)
            assert diffs.apply_many([up]) == full.apply_many([up])
            got, want = diffs.raw_fields("d1"), full.raw_fields("d1")
            got.pop("_v"), want.pop("_v")
            assert got == want


def test_a_diff_leaves_out_segment_fields_equal_to_the_remembered_ones(
    redis_store: RedisStore, redis_client: Any
) -> None:
    """Observable only through a writer that breaks the rule (changes a segment field
    without bumping ``_v``): the diff does not rewrite what it remembers as unchanged."""
    key = K.Keys(redis_store.prefix).customer("c1")
    redis_store.apply_many([update(state=RICH, offset=1)])
    redis_client.hset(key, "segment_name", "renamed behind the store's back")
    redis_store.apply_many([update(state=DIFF_STATES[1], offset=2, updated_at=2.5)])
    fields = redis_store.raw_fields("c1")
    assert fields["segment_name"] == "renamed behind the store's back"  # left out
    assert fields["updated_at"] == "2.5" and fields["_p0"] == "2"  # written as always
    # a changed segment is written in full
    redis_store.apply_many([update(state=DIFF_STATES[1], offset=3, segment_name="Loyal 2")])
    assert redis_store.raw_fields("c1")["segment_name"] == "Loyal 2"


def test_a_sweep_bumps_the_version_so_a_remembered_record_is_never_stale(
    redis_store: RedisStore, redis_client: Any
) -> None:
    key = K.Keys(redis_store.prefix).customer("c1")
    redis_store.apply_many([update(state=RICH, offset=1)])  # remembered: segment 1 "Loyal"
    version = int(redis_client.hget(key, "_v"))
    assert sweep_write(redis_client, key, RICH.decay_ts, (2, "At risk")) == [1, b"1"]  # type: ignore[arg-type]
    assert int(redis_client.hget(key, "_v")) == version + 1
    assert redis_client.hget(key, "segment_name") == b"At risk"
    # The store's diff against its remembered record (segment 1) would leave the segment
    # out; the version moved, so the script refuses it and the full record is written.
    (result,) = redis_store.apply_many([update(state=DIFF_STATES[1], offset=2)])
    assert result.applied and result.previous_segment_id == 2
    fields = redis_store.raw_fields("c1")
    assert (fields["segment_id"], fields["segment_name"]) == ("1", "Loyal")
    assert int(fields["_v"]) == version + 2
    assert K.decode_state(fields) == DIFF_STATES[1]


def test_a_sweep_skips_a_customer_who_bought_meanwhile_and_keeps_the_version(
    redis_store: RedisStore, redis_client: Any
) -> None:
    key = K.Keys(redis_store.prefix).customer("c1")
    redis_store.apply_many([update(state=RICH, offset=1)])
    version = redis_client.hget(key, "_v")
    assert sweep_write(redis_client, key, RICH.decay_ts - 1, (2, "At risk")) == [0, b"1"]  # type: ignore[operator]
    assert redis_client.hget(key, "_v") == version


def test_a_sweep_of_a_hash_without_a_version_starts_it_at_the_server_clock(
    redis_client: Any, unique: Any
) -> None:
    """Hashes written before ``_v`` existed: the sweep starts it like the guard script."""
    key = K.Keys(unique.prefix).customer("old")
    redis_client.hset(key, mapping={"decay_ts": "5", "segment_id": "1"})
    assert sweep_write(redis_client, key, 5.0, (2, "At risk")) == [1, b"1"]
    sec, usec = redis_client.time()
    assert 0 < sec * 10**6 + usec - int(redis_client.hget(key, "_v")) < 60 * 10**6


@pytest.mark.parametrize("keys_per_script", [1, 16])
def test_a_flushed_script_cache_and_a_stale_diff_in_one_batch(
    redis_url: str, redis_client: Any, unique: Any, keys_per_script: int
) -> None:
    """Calls that found the script cache flushed are sent again in full (the script
    reloaded), a stale diff among them included; then diffs work as before."""
    ids = ["c1", "c2", "c3"]
    with (
        RedisStore.from_url(redis_url, prefix=unique.prefix, keys_per_script=keys_per_script) as a,
        RedisStore.from_url(redis_url, prefix=unique.prefix) as b,
    ):
        a.apply_many([update(c, state=RICH, offset=1) for c in ids])
        b.apply_many([update("c2", state=DIFF_STATES[3], offset=2, segment_id=2)])
        redis_client.script_flush()
        results = a.apply_many([update(c, state=DIFF_STATES[1], offset=3) for c in ids])
        assert [(r.customer_id, r.applied, r.previous_segment_id) for r in results] == [
            ("c1", True, 1), ("c2", True, 2), ("c3", True, 1),
        ]  # fmt: skip
        for c in ids:
            fields = a.raw_fields(c)
            assert K.decode_state(fields) == DIFF_STATES[1] and fields["segment_id"] == "1"
        assert a.segment_sizes() == {1: 3, 2: 0}
        b.apply_many([update("c3", state=RICH, offset=4)])  # c3's version moves on
        results = a.apply_many([update(c, state=DIFF_STATES[2], offset=5) for c in ids])
        assert [r.applied for r in results] == [True] * 3  # c3: refused, resent in full
        assert all(a.get(c).state == DIFF_STATES[2] for c in ids)  # type: ignore[union-attr]
