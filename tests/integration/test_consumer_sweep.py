"""The recency sweep on a real Redis: idle customers move, via the index, consistently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import redis

from consumer.processor import BatchProcessor, run_step
from consumer.sweep import DAY, RecencySweep, SweepMarkers
from producer.contract import CheckoutEvent
from state.config import Settings
from state.features import derive
from state.online import OnlineSegmenter
from tests.consumer_support import END, World, make_world, records_for
from tests.integration.test_consumer_e2e import publish

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(customers=600, events=3000, seed=51)


def test_sweep_moves_idle_customers_found_through_the_index(
    settings: Settings, world: World
) -> None:
    store = publish(settings, world)
    client = redis.Redis.from_url(settings.redis_url)
    seg = OnlineSegmenter.from_model(world.model)  # no forgetting: weights are plain counts
    proc = BatchProcessor(world.model, seg)
    markers = SweepMarkers(client, prefix=settings.redis_prefix)
    records = records_for(world.stream)
    run_step(records, store, proc, now=END + DAY, markers=markers)

    sweep = RecencySweep(
        client, prefix=settings.redis_prefix, interval_seconds=60, boundaries_days=(30.0,)
    )
    sweep.last = END - 40 * DAY  # previous sweep: windows are [last - 30 d, now - 30 d)
    now = END + 20 * DAY
    lo, hi = sweep.last - 30 * DAY, now - 30 * DAY
    everyone = store.get_many([s.customer_id for s in world.seeds])
    in_window = {
        cid for cid, s in everyone.items() if s is not None and lo <= s.state.decay_ts < hi
    }
    assert set(sweep.candidates(now)) == in_window and in_window

    changes = sweep.run(proc, store, owned=lambda _: True, now=now)
    assert changes and {c.reason for c in changes} == {"sweep"}
    moved = {c.customer_id for c in changes}
    assert moved <= in_window
    after = store.get_many(sorted(in_window))
    for cid in in_window:  # every candidate now has the segment of its features at `now`
        s = after[cid]
        want = world.model.segments[seg.predict_one(derive(s.state, now))].id
        assert s.segment_id == want, cid
        assert (cid in moved) == (everyone[cid].segment_id != want)
    for c in changes:
        assert c.previous_segment_id == everyone[c.customer_id].segment_id
    assert store.segment_sizes() == {k: v for k, v in store.recount_segment_sizes().items() if v}
    assert sweep.run(proc, store, owned=lambda _: True, now=now) == []  # nothing new

    # the next event of a swept customer moves its point out of the cluster holding it
    cid = sorted(moved)[0]
    held = markers.get_many([cid])[cid]
    held_index = next(i for i, s in enumerate(world.model.segments) if held.endswith(f"|{s.id}"))
    weights = seg.weights
    event = CheckoutEvent(event_id="back", customer_id=cid, ts=now + 1, amount=25.0)
    (record,) = records_for([event])
    record = replace(record, offset=10**9)  # newer than anything of its partition
    step = run_step([record], store, proc, now=now + 2, markers=markers)
    (update,) = step.plan.updates
    new_index = next(i for i, s in enumerate(world.model.segments) if s.id == update.segment_id)
    expected = weights.copy()
    expected[held_index] -= 1
    expected[new_index] += 1
    assert np.allclose(seg.weights, expected)
    assert markers.get_many([cid]) == {}  # done with
