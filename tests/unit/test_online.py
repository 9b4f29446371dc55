"""The online segment model: river contract, schema guard, count-weighted moves, merge."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import checks

from state.errors import ConfigError
from state.model import SegmentModel
from state.online import FeatureSchemaError, OnlineSegmenter, Previous
from state.online_state import Contribution, Delta, OnlineState, delta_between, merge


def make_model(version: str = "v1", weights: tuple[float, ...] = (4.0, 4.0, 2.0)) -> SegmentModel:
    return SegmentModel.from_dict(
        {
            "schema_version": 1,
            "version": version,
            "as_of": 1000.0,
            "features": ["spend", "orders"],
            "transforms": {"spend": "log1p"},
            "imputation": {"spend": 0.0},
            "scaler": {"kind": "standard", "mean": [3.0, 5.0], "scale": [2.0, 4.0]},
            "centroids": [[-1.0, -1.0], [1.0, 1.0], [2.0, -1.0]],
            "weights": list(weights),
            "segments": [
                {"id": 10, "name": "Low"},
                {"id": 20, "name": "High"},
                {"id": 30, "name": "Rich"},
            ],
            "algorithm": "kmeans",
        }
    )


def rows(n: int, seed: int = 0) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    return [
        {"spend": float(s), "orders": float(o)}
        for s, o in zip(rng.lognormal(3, 2, n), rng.integers(0, 15, n), strict=True)
    ]


# -- river contract ---------------------------------------------------------------------------


def test_passes_rivers_estimator_checks() -> None:
    checks.check_estimator(OnlineSegmenter.from_model(make_model(), half_life_events=50))


def test_first_assignments_equal_the_offline_model() -> None:
    model = make_model()
    seg = OnlineSegmenter.from_model(model, half_life_seconds=86400)
    for x in rows(200):
        assert seg.predict_one(x) == int(model.nearest(model.vector(x))[0])


def test_predict_one_is_pure_and_does_not_touch_its_input() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    x = {"spend": 50.0, "orders": 3.0}
    before, x_copy = seg.state(), copy.deepcopy(x)
    seg.predict_one(x)
    assert x == x_copy
    assert np.array_equal(seg.state().sums, before.sums)
    seg.learn_one(x)
    assert x == x_copy


def test_pickle_round_trip_predicts_the_same() -> None:
    seg = OnlineSegmenter.from_model(make_model(), half_life_events=10)
    for x in rows(30):
        seg.learn_one(x)
    clone = pickle.loads(pickle.dumps(seg))
    assert [clone.predict_one(x) for x in rows(50, 1)] == [seg.predict_one(x) for x in rows(50, 1)]


def test_both_half_lives_or_a_non_positive_one_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        OnlineSegmenter.from_model(make_model(), half_life_events=10, half_life_seconds=10)
    with pytest.raises(ConfigError):
        OnlineSegmenter.from_model(make_model(), half_life_events=0)


# -- schema guard -----------------------------------------------------------------------------


def test_missing_or_nan_feature_is_imputed_as_the_model_says() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    imputed = seg.vectorize({"spend": 0.0, "orders": 2.0})  # imputation value of spend (log1p(0))
    assert np.allclose(seg.vectorize({"orders": 2.0}), imputed)
    assert np.allclose(seg.vectorize({"spend": float("nan"), "orders": 2.0}), imputed)


def test_missing_feature_without_imputation_is_an_error() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    with pytest.raises(FeatureSchemaError, match="orders"):
        seg.predict_one({"spend": 1.0})


def test_non_numeric_feature_is_an_error() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    with pytest.raises(FeatureSchemaError, match="not a number"):
        seg.learn_one({"spend": "12", "orders": 1})


def test_unknown_features_never_become_coordinates() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    x = {"spend": 20.0, "orders": 4.0}
    assert seg.predict_one({**x, "brand_new": 1e9}) == seg.predict_one(x)
    seg.learn_one({**x, "brand_new": 1e9})
    assert seg.centroids.shape == (3, 2)
    strict = OnlineSegmenter.from_model(make_model(), strict=True)
    with pytest.raises(FeatureSchemaError, match="brand_new"):
        strict.predict_one({**x, "brand_new": 1.0})


# -- count-weighted updates and forgetting ----------------------------------------------------


def test_one_update_follows_the_streaming_kmeans_rule() -> None:
    model = make_model()
    seg = OnlineSegmenter.from_model(model, half_life_events=10)
    x = {"spend": 400.0, "orders": 9.0}
    v = model.vector(x)
    j = seg.predict_one(x)
    c, n, a = np.asarray(model.centroids[j]), model.weights[j], 2 ** (-1 / 10)
    seg.learn_one(x)
    assert np.allclose(seg.centroids[j], (c * n * a + v) / (n * a + 1))
    assert seg.weights[j] == pytest.approx(n * a + 1)


def test_time_forgetting_halves_weights_after_one_half_life() -> None:
    seg = OnlineSegmenter.from_model(make_model(), half_life_seconds=100)
    with pytest.raises(ValueError, match="at="):
        seg.learn_one({"spend": 1.0, "orders": 1.0})
    x = {"spend": 1.0, "orders": 1.0}
    j = seg.predict_one(x)
    seg.learn_one(x, at=1100.0)  # model as_of is 1000
    expected = np.array(make_model().weights) / 2
    expected[j] += 1
    assert np.allclose(seg.weights, expected)
    seg.learn_one(x, at=900.0)  # late event: the clock never goes back
    assert seg.clock == 1100.0


def test_a_customer_moves_its_point_instead_of_adding_one_per_event() -> None:
    model = make_model()
    seg = OnlineSegmenter.from_model(model)  # no forgetting: weights are plain counts
    total = sum(model.weights)
    prev = None
    for i in range(1000):  # a very frequent buyer
        x = {"spend": 300.0 + i, "orders": 9.0 + i / 100}
        moves = seg.move_many(seg.vectorize(x)[None, :], previous=[prev])
        prev = moves.contribution(0, seg.vectorize(x))
    assert seg.weights.sum() == pytest.approx(total + 1)
    fresh = OnlineSegmenter.from_model(model)
    fresh.learn_one(x)
    assert np.allclose(seg.centroids, fresh.centroids)


def test_offline_customer_first_update_replaces_its_seed_contribution() -> None:
    model = make_model()
    seg = OnlineSegmenter.from_model(model)
    x_offline = {"spend": 1.0, "orders": 1.0}
    seg.learn_one({"spend": 5000.0, "orders": 30.0}, previous=seg.offline_contribution(x_offline))
    assert seg.weights.sum() == pytest.approx(sum(model.weights))


def test_contribution_of_another_model_version_is_not_removed() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    stale = Contribution(point=(0.0, 0.0), segment=0, clock=0.0, model_version="old")
    seg.learn_one({"spend": 1.0, "orders": 1.0}, previous=stale)
    assert seg.weights.sum() == pytest.approx(sum(make_model().weights) + 1)


@pytest.mark.parametrize("kind", ["events", "seconds"])
def test_batch_update_is_the_same_maths_as_learn_one(kind: str) -> None:
    model = make_model(weights=(50.0, 50.0, 50.0))
    hl = {"half_life_events": 7.0} if kind == "events" else {"half_life_seconds": 30.0}
    one = OnlineSegmenter.from_model(model, **hl)
    many = OnlineSegmenter.from_model(model, **hl)
    rng = np.random.default_rng(3)
    # points close to their centres so no assignment changes within the batch
    centres = np.asarray(model.centroids)
    picks = rng.integers(0, 3, 40)
    pts = centres[picks] + rng.normal(0, 0.05, (40, 2))
    at = 1000.0 + np.cumsum(rng.uniform(0, 5, 40))
    prev = [
        None
        if i % 3 == 0
        else Contribution(
            point=tuple(centres[(i + 1) % 3] + 0.01), segment=(i + 1) % 3, clock=990.0 + i
        )
        for i in range(40)
    ]
    if kind == "events":
        prev = [
            None if p is None else Contribution(point=p.point, segment=p.segment, clock=0.0)
            for p in prev
        ]
    for i in range(40):
        one.move_many(pts[i : i + 1], at=at[i : i + 1], previous=[prev[i]])
    many.move_many(pts, at=at, previous=prev)
    assert np.allclose(one.state().sums, many.state().sums, rtol=1e-10, atol=1e-10)
    assert np.allclose(one.weights, many.weights, rtol=1e-12)
    assert one.clock == many.clock


def test_previous_arrays_and_contribution_lists_agree() -> None:
    model = make_model()
    a = OnlineSegmenter.from_model(model, half_life_events=20)
    b = OnlineSegmenter.from_model(model, half_life_events=20)
    pts = a.vectorize_many(rows(10))
    prev = [Contribution(point=tuple(p), segment=1, clock=0.0) for p in pts[::-1]]
    a.move_many(pts, previous=prev)
    b.move_many(pts, previous=Previous.from_contributions(prev, model.version, 2))
    assert np.array_equal(a.state().sums, b.state().sums)


# -- several instances ------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 30),
    hl=st.one_of(st.none(), st.floats(1.0, 1e4)),
)
def test_merging_one_instances_delta_reproduces_its_state(
    seed: int, n: int, hl: float | None
) -> None:
    seg = OnlineSegmenter.from_model(make_model(), half_life_seconds=hl) if hl else None
    seg = seg or OnlineSegmenter.from_model(make_model())
    base = seg.state()
    rng = np.random.default_rng(seed)
    seg.move_many(rng.normal(0, 2, (n, 2)), at=1000.0 + np.cumsum(rng.uniform(0, 50, n)))
    merged = merge(
        base, [seg.delta_since(base)], half_life=seg.half_life, clock_kind=seg.clock_kind
    )
    assert np.allclose(merged.sums, seg.state().sums, atol=1e-9)
    assert np.allclose(merged.counts, seg.state().counts, atol=1e-9)


def test_two_instances_that_merge_share_the_same_centroids() -> None:
    model = make_model(weights=(100.0, 100.0, 100.0))
    shared = OnlineSegmenter.from_model(model, half_life_seconds=3600).state()
    a = OnlineSegmenter.from_model(model, half_life_seconds=3600)
    b = OnlineSegmenter.from_model(model, half_life_seconds=3600)
    single = OnlineSegmenter.from_model(model, half_life_seconds=3600)
    rng = np.random.default_rng(11)
    for step in range(5):  # five sync intervals
        a.load_state(shared)
        b.load_state(shared)
        pa, pb = rng.normal(1, 1, (20, 2)), rng.normal(-1, 1, (20, 2))
        t = 1000.0 + 60 * step + np.arange(20.0)
        a.move_many(pa, at=t)
        b.move_many(pb, at=t)
        single.move_many(pa, at=t)
        single.move_many(pb, at=t)
        shared = merge(
            shared,
            [a.delta_since(shared), b.delta_since(shared)],
            half_life=3600,
            clock_kind="seconds",
        )
    a.load_state(shared)
    b.load_state(shared)
    assert np.array_equal(a.centroids, b.centroids)
    # and they stay close to one instance that saw everything (assignments may differ slightly)
    assert np.abs(a.centroids - single.centroids).max() < 0.1


def test_event_clocks_merge_by_adding_the_events_seen() -> None:
    seg = OnlineSegmenter.from_model(make_model(), half_life_events=100)
    base = seg.state()
    merged = merge(
        base,
        [
            Delta(sums=np.zeros((3, 2)), counts=np.zeros(3), since=0.0, clock=30.0),
            Delta(sums=np.zeros((3, 2)), counts=np.zeros(3), since=0.0, clock=20.0),
        ],
        half_life=100,
        clock_kind="events",
    )
    assert merged.clock == 50.0
    assert np.allclose(merged.counts, base.counts * 2 ** (-50 / 100))


def test_states_and_deltas_survive_json() -> None:
    seg = OnlineSegmenter.from_model(make_model(), half_life_events=5)
    base = seg.state()
    seg.learn_one({"spend": 3.0, "orders": 2.0})
    state = OnlineState.from_dict(json.loads(json.dumps(seg.state().to_dict())))
    assert np.array_equal(state.sums, seg.state().sums) and state.clock == seg.clock
    d = delta_between(base, seg.state(), 5)
    d2 = Delta.from_dict(json.loads(json.dumps(d.to_dict())))
    assert np.array_equal(d.sums, d2.sums) and d2.since == d.since


def test_loading_a_state_of_the_wrong_shape_is_refused() -> None:
    seg = OnlineSegmenter.from_model(make_model())
    with pytest.raises(FeatureSchemaError):
        seg.load_state(OnlineState(sums=np.zeros((2, 2)), counts=np.zeros(2), clock=None))


# -- hot reload -------------------------------------------------------------------------------


def test_a_new_model_reseeds_the_online_model() -> None:
    old = OnlineSegmenter.from_model(make_model("v1"))
    for x in rows(100):
        old.learn_one(x)
    new_model = make_model("v2", weights=(1.0, 1.0, 1.0))
    new = OnlineSegmenter.from_model(new_model)
    assert np.array_equal(new.centroids, np.asarray(new_model.centroids))
    assert all(
        new.predict_one(x) == int(new_model.nearest(new_model.vector(x))[0]) for x in rows(50, 2)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "spend": st.one_of(
                    st.none(),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-(10**6), 10**6),
                ),
                "orders": st.one_of(st.floats(-1e6, 1e6), st.integers(0, 1000)),
            },
            optional={"extra": st.text(max_size=3)},
        ),
        max_size=20,
    )
)
def test_vectorize_many_is_vectorize_row_by_row(rows: list[dict[str, object]]) -> None:
    seg = OnlineSegmenter.from_model(make_model())
    want = np.array([seg.vectorize(r) for r in rows]).reshape(len(rows), 2)
    assert np.array_equal(seg.vectorize_many(rows), want)
