"""Exactly-once state from at-least-once delivery, against a real Redis (and the in-memory twin).

A simulated consumer reads a batch, folds the events its stored records accept with
``apply_event``, writes each customer's final state with the offset of the last event it
applied, then commits. It crashes at random points: before writing, after writing only a
prefix of the batch, or after writing but before committing; each restart resumes from the
last commit and replays. Whatever the crash points, the final state equals applying each
event exactly once (exact equality: the fold order per customer is the log order).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from producer.contract import CheckoutEvent
from state.features import CustomerState, apply_event
from state.redis_store import RedisStore
from state.store import CustomerSeed, CustomerStore, CustomerUpdate, InMemoryStore

AS_OF = 1_750_000_000.0
HALF_LIFE = 30.0
SEEDS = range(25)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[CustomerStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    request.getfixturevalue("redis_client")  # deletes this test's keys afterwards
    unique = request.getfixturevalue("unique")
    with RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=unique.prefix) as s:
        yield s


def segment_of(state: CustomerState) -> int:
    return state.orders % 3


@dataclass
class Scenario:
    """A two-partition log (customers keyed to one partition) and the offline history."""

    log: dict[int, list[CheckoutEvent]]
    history: dict[str, list[CheckoutEvent]]  # seeded customers' events up to AS_OF
    customers: list[str]

    def expected(self) -> dict[str, CustomerState]:
        out: dict[str, CustomerState] = {}
        for cid in self.customers:
            state = CustomerState()
            seeded = cid in self.history
            for e in self.history.get(cid, []):
                state = apply_event(state, e, half_life_days=HALF_LIFE)
            for events in self.log.values():
                for e in events:
                    if e.customer_id == cid and not (seeded and e.ts <= AS_OF):
                        state = apply_event(state, e, half_life_days=HALF_LIFE)
            out[cid] = state
        return out


def make_scenario(rng: random.Random, n_events: int = 60) -> Scenario:
    customers = [f"C{i:03d}" for i in range(6)]
    partition_of = {cid: i % 2 for i, cid in enumerate(customers)}
    seeded = set(customers[:3])
    history: dict[str, list[CheckoutEvent]] = {cid: [] for cid in seeded}
    log: dict[int, list[CheckoutEvent]] = {0: [], 1: []}

    def event(cid: str, n: int, ts: float) -> CheckoutEvent:
        refund = rng.random() < 0.15
        return CheckoutEvent(
            event_id=f"e{n}",
            customer_id=cid,
            ts=ts,
            amount=round(rng.choice([0.0, rng.uniform(0.01, 500.0)]), 2),
            type="refund" if refund else "purchase",
            discount=round(rng.uniform(0, 20), 2) if rng.random() < 0.3 else 0.0,
            items=rng.randint(0, 5),
            age=float(rng.randint(18, 90)) if rng.random() < 0.2 else None,
            gender=rng.choice(["F", "M"]) if rng.random() < 0.2 else None,
        )

    for n in range(20):  # offline history of the seeded customers
        cid = rng.choice(sorted(seeded))
        history[cid].append(event(cid, -n - 1, AS_OF - rng.uniform(0, 90 * 86400)))
    for n in range(n_events):
        cid = rng.choice(customers)
        if cid in seeded and history[cid] and rng.random() < 0.15:
            e = rng.choice(history[cid])  # the stream overlaps the snapshot: already counted
        else:  # mostly after the snapshot, some out of order, some on the same second
            ts = AS_OF + rng.choice([rng.uniform(1, 30 * 86400), 3600.0, 7200.0])
            e = event(cid, n, ts)
        log[partition_of[cid]].append(e)
    return Scenario(log=log, history=history, customers=customers)


def seed_snapshot(store: CustomerStore, sc: Scenario) -> None:
    seeds = []
    for cid, events in sc.history.items():
        state = CustomerState()
        for e in events:
            state = apply_event(state, e, half_life_days=HALF_LIFE)
        seeds.append(
            CustomerSeed(
                customer_id=cid, state=state, segment_id=segment_of(state),
                segment_name=f"S{segment_of(state)}", model_version="m1",
                updated_at=AS_OF, as_of=AS_OF,
            )
        )  # fmt: skip
    store.put_initial_many(seeds)


Record = tuple[int, int, CheckoutEvent]  # partition, offset, event


def fold_batch(store: CustomerStore, batch: list[Record]) -> list[CustomerUpdate]:
    """What the consumer does with one poll: read, fold accepted events, build final writes."""
    ids = list(dict.fromkeys(e.customer_id for _, _, e in batch))
    stored = store.get_many(ids)
    updates = []
    for cid in ids:
        s = stored[cid]
        state = s.state if s is not None else CustomerState()
        offsets = dict(s.offsets) if s is not None else {}
        as_of = s.as_of if s is not None else None
        last: Record | None = None
        for p, off, e in batch:
            if e.customer_id != cid:
                continue
            if (p in offsets and off <= offsets[p]) or (as_of is not None and e.ts <= as_of):
                continue
            state = apply_event(state, e, half_life_days=HALF_LIFE)
            offsets[p] = off
            last = (p, off, e)
        if last is not None:
            seg = segment_of(state)
            updates.append(
                CustomerUpdate(
                    customer_id=cid, state=state, segment_id=seg, segment_name=f"S{seg}",
                    model_version="m1", updated_at=last[2].ts, partition=last[0],
                    offset=last[1], event_ts=last[2].ts,
                )
            )  # fmt: skip
    return updates


@dataclass
class Consumer:
    """A consumer over the whole log that may crash; ``committed`` survives crashes."""

    store: CustomerStore
    log: dict[int, list[CheckoutEvent]]
    rng: random.Random
    committed: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})
    crashes: int = 0

    def done(self) -> bool:
        return all(self.committed[p] >= len(events) for p, events in self.log.items())

    def run_until_crash(self, crash_rate: float) -> None:
        pos = dict(self.committed)
        while any(pos[p] < len(self.log[p]) for p in self.log):
            batch: list[Record] = []
            for _ in range(self.rng.randint(1, 8)):
                open_parts = [p for p in self.log if pos[p] < len(self.log[p])]
                if not open_parts:
                    break
                p = self.rng.choice(open_parts)
                batch.append((p, pos[p], self.log[p][pos[p]]))
                pos[p] += 1
            updates = fold_batch(self.store, batch)
            roll = self.rng.random()
            if roll < crash_rate / 3:  # crash before writing
                self.crashes += 1
                return
            if roll < 2 * crash_rate / 3:  # crash in the middle of the write
                self.store.apply_many(updates[: self.rng.randint(0, len(updates))])
                self.crashes += 1
                return
            self.store.apply_many(updates)
            if roll < crash_rate:  # crash after writing, before the commit
                self.crashes += 1
                return
            self.committed = dict(pos)


def assert_exactly_once(store: CustomerStore, sc: Scenario) -> None:
    expected = sc.expected()
    got = store.get_many(sc.customers)
    for cid, state in expected.items():
        stored = got[cid]
        if state == CustomerState():  # never saw an accepted event
            assert stored is None or stored.state == state
            continue
        assert stored is not None and stored.state == state, cid
    sizes: dict[int, int] = {}
    for stored in got.values():
        if stored is not None and stored.segment_id is not None:
            sizes[stored.segment_id] = sizes.get(stored.segment_id, 0) + 1
    assert {k: v for k, v in store.segment_sizes().items() if v} == sizes


@pytest.mark.parametrize("seed", SEEDS)
def test_replaying_after_random_crashes_counts_each_event_once(
    store: CustomerStore, seed: int
) -> None:
    rng = random.Random(seed)
    sc = make_scenario(rng)
    seed_snapshot(store, sc)
    consumer = Consumer(store, sc.log, rng)
    for _restart in range(500):
        consumer.run_until_crash(crash_rate=0.5)
        if consumer.done():
            break
    assert consumer.done()
    assert consumer.crashes > 0
    assert_exactly_once(store, sc)
    # Replaying the whole log once more (e.g. a reset consumer group) changes nothing.
    before = store.get_many(sc.customers)
    Consumer(store, sc.log, rng).run_until_crash(crash_rate=0.0)
    assert store.get_many(sc.customers) == before


def run_two_consumers(store: CustomerStore, sc: Scenario, rng: random.Random) -> None:
    """Two consumers poll the same records; each writes what it folded from an older read."""
    records: list[Record] = []  # partitions interleaved at random, each in offset order
    pos = {p: 0 for p in sc.log}
    while open_parts := [p for p in sc.log if pos[p] < len(sc.log[p])]:
        p = rng.choice(open_parts)
        records.append((p, pos[p], sc.log[p][pos[p]]))
        pos[p] += 1
    cursors = [0, 0]
    pending: list[list[CustomerUpdate] | None] = [None, None]
    while cursors[0] < len(records) or cursors[1] < len(records) or any(pending):
        who = rng.randrange(2)
        if pending[who] is not None:
            store.apply_many(pending[who] or [])  # write what was folded from an older read
            pending[who] = None
        elif cursors[who] < len(records):
            n = rng.randint(1, 6)
            pending[who] = fold_batch(store, records[cursors[who] : cursors[who] + n])
            cursors[who] += n


@pytest.mark.parametrize("seed", range(10))
def test_a_fenced_consumer_that_lost_its_partitions_cannot_double_count(
    store: CustomerStore, seed: int
) -> None:
    """Two consumers over the same log, reads and writes interleaved at random: the old
    owner never committed, the new one restarts from offset 0. Guarded writes keep every
    accepted state equal to "base + events after its offset"."""
    rng = random.Random(1000 + seed)
    sc = make_scenario(rng, n_events=40)
    seed_snapshot(store, sc)
    run_two_consumers(store, sc, rng)
    assert_exactly_once(store, sc)


class Unguarded(InMemoryStore):
    """Controls: a store whose writes are never refused, optionally forgetting offsets."""

    def __init__(self, *, forget_offsets: bool) -> None:
        super().__init__()
        self.forget_offsets = forget_offsets

    def get_many(self, customer_ids: Any) -> Any:
        out = super().get_many(customer_ids)
        if self.forget_offsets:
            for cid, s in out.items():
                if s is not None:
                    out[cid] = dataclasses.replace(s, offsets={})
        return out

    def apply_many(self, updates: Any) -> Any:
        for u in updates:
            h = self.hashes.get(u.customer_id, {})
            for name in [f for f in h if f.startswith("_p")]:
                del h[name]
        return super().apply_many(updates)


def wrong_customers(store: CustomerStore, sc: Scenario) -> list[str]:
    got, expected = store.get_many(sc.customers), sc.expected()
    return [c for c in sc.customers if (got[c].state if got[c] else CustomerState()) != expected[c]]


def test_control_without_offsets_crash_replays_double_count() -> None:
    rng = random.Random(7)
    sc = make_scenario(rng)
    store = Unguarded(forget_offsets=True)
    seed_snapshot(store, sc)
    consumer = Consumer(store, sc.log, rng)
    while not consumer.done():
        consumer.run_until_crash(crash_rate=0.5)
    assert wrong_customers(store, sc)


def test_control_without_the_write_guard_a_fenced_consumer_corrupts_state() -> None:
    wrong = 0
    for seed in range(10):
        rng = random.Random(1000 + seed)
        sc = make_scenario(rng, n_events=40)
        store = Unguarded(forget_offsets=False)
        seed_snapshot(store, sc)
        run_two_consumers(store, sc, rng)
        wrong += len(wrong_customers(store, sc))
    assert wrong > 0
