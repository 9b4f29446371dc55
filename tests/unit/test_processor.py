"""The consumer's batch step over plain lists and the in-memory store (no servers)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from consumer import processor
from consumer.cache import StateCache
from consumer.processor import (
    BatchProcessor,
    SourceRecord,
    StepResult,
    decode_records,
    previous_contribution,
    run_step,
)
from producer.contract import CheckoutEvent, encode
from state.features import derive
from state.online import OnlineSegmenter
from state.store import InMemoryStore
from tests.consumer_support import (
    World,
    assert_same_state,
    expected_states,
    make_world,
    records_for,
)

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=200, events=2000, seed=3)


def seeded(world: World) -> tuple[InMemoryStore, BatchProcessor]:
    store = InMemoryStore()
    store.put_initial_many(world.seeds)
    seg = OnlineSegmenter.from_model(world.model, half_life_seconds=30 * 86400)
    return store, BatchProcessor(world.model, seg)


def consume(
    store: InMemoryStore, proc: BatchProcessor, records: list[SourceRecord], batch: int
) -> list[StepResult]:
    return [
        run_step(records[i : i + batch], store, proc, now=NOW)
        for i in range(0, len(records), batch)
    ]


def test_streamed_state_equals_the_batch_computation(world: World) -> None:
    store, proc = seeded(world)
    consume(store, proc, records_for(world.stream), batch=250)
    want = expected_states(world, world.stream)
    for cid, state in want.items():
        stored = store.get(cid)
        assert stored is not None
        assert_same_state(stored.state, state, cid)


def test_redelivery_of_any_batches_changes_nothing(world: World) -> None:
    store, proc = seeded(world)
    records = records_for(world.stream)
    steps = consume(store, proc, records, batch=300)
    assert sum(s.plan.applied_events for s in steps) == len(records)
    before = {cid: dict(h) for cid, h in store.hashes.items()}
    rng = random.Random(5)
    replay = records[: rng.randrange(len(records))] + rng.sample(records, 200)
    again = consume(store, proc, replay, batch=170)
    assert sum(s.plan.applied_events for s in again) == 0
    assert sum(s.plan.duplicate_events for s in again) == len(replay)
    assert all(not s.plan.updates and not s.changes for s in again)
    assert {cid: dict(h) for cid, h in store.hashes.items()} == before


def test_history_events_at_or_before_as_of_are_not_counted_twice(world: World) -> None:
    store, proc = seeded(world)
    old = CheckoutEvent(
        event_id="old", customer_id=world.seeds[0].customer_id, ts=world.as_of, amount=99.0
    )
    step = run_step(records_for([old]), store, proc, now=NOW)
    assert step.plan.duplicate_events == 1 and not step.plan.updates
    assert store.get(old.customer_id).state == world.seeds[0].state


def test_bad_messages_go_to_dead_letters_and_the_good_ones_around_them_apply(world: World) -> None:
    store, proc = seeded(world)
    good = records_for(world.stream[:50])
    bad = [
        replace(good[3], value=b"{not json"),
        replace(good[7], key=b"someone-else"),
        replace(good[9], value=None),
        replace(good[11], value=json.dumps({"event_id": "x", "customer_id": "C1"}).encode()),
    ]
    bad_offsets = {(b.partition, b.offset) for b in bad}
    mixed = [
        next((b for b in bad if (b.partition, b.offset) == (r.partition, r.offset)), r)
        for r in good
    ]
    step = run_step(mixed, store, proc, now=NOW)
    assert [(d.record.partition, d.record.offset) for d in step.dead_letters] == [
        (b.partition, b.offset) for b in bad
    ]
    assert [d.reason for d in step.dead_letters] == [
        "invalid_json",
        "key_mismatch",
        "invalid_json",
        "key_mismatch",
    ]
    headers = dict(step.dead_letters[0].headers())
    assert headers["source_topic"] == b"events" and headers["reason"] == b"invalid_json"
    assert step.plan.applied_events == len(good) - len(bad_offsets)


def test_first_assignments_equal_the_offline_model(world: World) -> None:
    store, proc = seeded(world)
    new = CheckoutEvent(event_id="n1", customer_id="BRAND-NEW", ts=world.as_of + 60, amount=80.0)
    step = run_step(records_for([new]), store, proc, now=NOW)
    (update,) = step.plan.updates
    assert update.segment_id == world.model.assign(derive(update.state, new.ts)).id
    (change,) = step.changes  # a new customer enters a segment
    assert change.previous_segment_id is None and change.reason == "purchase"


def test_changes_only_on_a_real_change_with_the_reason(world: World) -> None:
    store, proc = seeded(world)
    steps = consume(store, proc, records_for(world.stream), batch=500)
    for s in steps:
        for c in s.changes:
            assert c.previous_segment_id != c.segment_id
            assert c.reason in ("purchase", "refund")
            body = json.loads(c.to_json())
            assert body["customer_id"] == c.customer_id and body["model_version"] == "m1"
    assert sum(len(s.changes) for s in steps) <= sum(len(s.plan.updates) for s in steps)


def test_a_new_model_version_gives_reason_new_model(world: World) -> None:
    store, _ = seeded(world)
    m2 = replace(world.model, version="m2", centroids=tuple(reversed(world.model.centroids)))
    proc2 = BatchProcessor(m2, OnlineSegmenter.from_model(m2, half_life_seconds=86400))
    step = run_step(records_for(world.stream[:300]), store, proc2, now=NOW)
    known = [c for c in step.changes if c.previous_segment_id is not None]
    assert known and {c.reason for c in known} == {"new_model"}
    assert {c.reason for c in step.changes if c.previous_segment_id is None} <= {
        "purchase",
        "refund",
    }


def test_a_customer_whose_processing_crashes_is_dead_lettered_with_the_class(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, proc = seeded(world)
    victim = world.stream[0].customer_id
    real_fold = processor.fold_events
    calls: list[str] = []

    def buggy(events, state, **kw):  # a processing bug that hits one customer only
        customer = {e.customer_id for e in events}.pop()  # one customer's events per fold
        calls.append(customer)
        if customer == victim:
            raise ZeroDivisionError("bug")
        return real_fold(events, state, **kw)

    monkeypatch.setattr(processor, "fold_events", buggy)
    step = run_step(records_for(world.stream[:200]), store, proc, now=NOW)
    dead = [d for d in step.dead_letters if d.reason == "processing_error:ZeroDivisionError"]
    n_victim = sum(1 for e in world.stream[:200] if e.customer_id == victim)
    assert len(dead) == n_victim and {d.record.key for d in dead} == {victim.encode()}
    assert calls.count(victim) == processor.POISON_ATTEMPTS  # bounded retries
    assert step.plan.applied_events == 200 - n_victim
    seed = next((x.state for x in world.seeds if x.customer_id == victim), None)
    stored = store.get(victim)
    assert (stored.state if stored else None) == seed  # untouched


def test_a_customer_on_two_partitions_is_guarded_per_partition(world: World) -> None:
    store, proc = seeded(world)
    cid = world.seeds[1].customer_id
    evs = [
        CheckoutEvent(event_id=f"e{i}", customer_id=cid, ts=world.as_of + 10 + i, amount=10.0)
        for i in range(4)
    ]
    recs = [
        SourceRecord(topic="t", partition=i % 2, offset=100 + i, key=cid.encode(), value=encode(e))
        for i, e in enumerate(evs)
    ]
    step = run_step(recs, store, proc, now=NOW)
    assert len(step.plan.updates) == 4 and all(r.applied for r in step.results)
    assert store.get(cid).offsets == {0: 102, 1: 103}
    assert store.get(cid).state.orders == world.seeds[1].state.orders + 4
    assert run_step(recs, store, proc, now=NOW).plan.applied_events == 0


def test_previous_contribution_is_rebuilt_from_the_stored_record(world: World) -> None:
    store, proc = seeded(world)
    stored = store.get(world.seeds[2].customer_id)
    prev = previous_contribution(stored, world.model, proc.segmenter)
    assert prev is not None and prev.clock == world.as_of
    assert world.model.segments[prev.segment].id == stored.segment_id
    other = replace(stored, model_version="other")
    assert previous_contribution(other, world.model, proc.segmenter) is None
    assert previous_contribution(None, world.model, proc.segmenter) is None


def test_decoder_rejections_keep_the_order_of_records() -> None:
    recs = [
        SourceRecord(topic="t", partition=0, offset=i, key=b"c", value=v)
        for i, v in enumerate([b"1", b"[]", b"{}"])
    ]
    ok, dead = decode_records(recs, now=NOW)
    assert not ok and [d.record.offset for d in dead] == [0, 1, 2]
    assert np.all([d.reason for d in dead])


def test_the_state_cache_saves_reads_and_holds_what_the_store_holds(world: World) -> None:
    store, proc = seeded(world)
    cached_store, cached_proc = seeded(world)
    cache = StateCache(capacity=150)
    records = records_for(world.stream)
    for i in range(0, len(records), 200):
        run_step(records[i : i + 200], store, proc, now=NOW)
        run_step(records[i : i + 200], cached_store, cached_proc, now=NOW, cache=cache)
    assert cached_store.hashes == store.hashes
    assert cache.hits > 0 and len(cache) == 150
    cached = cache.get_many(list(store.hashes))
    assert cached and all(cached_store.get(cid) == rec for cid, rec in cached.items())
    # a replay through the cache is skipped like one through the store
    again = run_step(records[:500], cached_store, cached_proc, now=NOW, cache=cache)
    assert again.plan.applied_events == 0 and cached_store.hashes == store.hashes


def test_remembered_points_move_the_online_model_exactly_as_rebuilt_ones(world: World) -> None:
    store, proc = seeded(world)  # rebuilds every previous point from the stored record
    memo_store, memo_proc = seeded(world)  # reuses the point of the state it computed
    cache, memo_cache = StateCache(), StateCache()
    records = records_for(world.stream)
    for i in range(0, len(records), 200):
        proc._points.clear()
        run_step(records[i : i + 200], store, proc, now=NOW, cache=cache)
        run_step(records[i : i + 200], memo_store, memo_proc, now=NOW, cache=memo_cache)
    assert memo_cache.hits > 0 and memo_proc._points
    assert memo_store.hashes == store.hashes
    a, b = proc.segmenter.state(), memo_proc.segmenter.state()
    assert np.array_equal(a.sums, b.sums) and np.array_equal(a.counts, b.counts)
