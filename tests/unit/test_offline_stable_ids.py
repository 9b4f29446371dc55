"""Stable segment ids across re-fits: Hungarian matching, never-reused new ids, transitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_blobs

from offline.fit import FitOptions, Previous, fit
from offline.stable_ids import HIGH_WATER_KEY, match_ids, transition_matrix


def test_hungarian_matching_keeps_ids_and_new_clusters_get_fresh_ones() -> None:
    prev = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    new = np.array([[0.2, 9.8], [9.9, 0.1], [0.1, 0.1], [20.0, 20.0]])
    assert match_ids(new, prev, [4, 5, 6], high_water=6) == [6, 5, 4, 7]


def test_an_id_is_never_reused_after_a_segment_disappears() -> None:
    prev = np.array([[0.0], [10.0], [20.0]])
    # fit 2 keeps two segments; id 9 disappears
    ids2 = match_ids(np.array([[0.5], [19.0]]), prev, [3, 9, 11], high_water=11)
    assert ids2 == [3, 11]
    # fit 3 grows back to three: the new one is 12, not the retired 9
    ids3 = match_ids(
        np.array([[0.0], [10.0], [20.0]]), np.array([[0.5], [19.0]]), ids2, high_water=11
    )
    assert ids3 == [3, 12, 11]


def test_first_fit_numbers_segments_from_one() -> None:
    assert match_ids(np.zeros((3, 2)), None, high_water=0) == [1, 2, 3]


def test_transition_matrix_counts_customers_in_both_fits() -> None:
    old = pd.Series({"a": 1, "b": 1, "c": 2, "gone": 2})
    new = pd.Series({"a": 1, "b": 3, "c": 2, "fresh": 3})
    t = transition_matrix(old, new, old_names={1: "X", 2: "Y"}, new_names={1: "X", 2: "Y", 3: "Z"})
    assert int(t.to_numpy().sum()) == 3
    assert t.loc["1 X", "3 Z"] == 1 and t.loc["2 Y", "2 Y"] == 1


def test_refit_on_shifted_data_keeps_ids_and_reports_transitions() -> None:
    X, _ = make_blobs(
        n_samples=400, centers=[[0, 0], [8, 0], [0, 8]], cluster_std=0.7, random_state=2
    )
    ids = [f"c{i}" for i in range(400)]
    opts = FitOptions(k_range=(3,), n_bootstrap=0, algorithms=("kmeans",), scaler="none")
    first = fit(pd.DataFrame(X, columns=["x", "y"]).assign(customer_id=ids), None, opts)
    moved = pd.DataFrame(X[::-1] + 0.3, columns=["x", "y"]).assign(customer_id=ids)  # order changed
    prev = Previous(model=first.model, assignments=first.customers["segment_id"])
    second = fit(moved, None, opts, previous=prev)
    by_centre = {
        tuple(np.round(c)): s.id
        for c, s in zip(first.model.centroids, first.model.segments, strict=True)
    }
    for c, s in zip(second.model.centroids, second.model.segments, strict=True):
        assert by_centre[tuple(np.round(np.asarray(c) - 0.3))] == s.id
    assert second.model.extra[HIGH_WATER_KEY] == 3
    assert second.transition is not None and int(second.transition.to_numpy().sum()) == 400


@settings(max_examples=60, deadline=None)
@given(
    new=st.integers(1, 8),
    old=st.integers(0, 8),
    high_water=st.integers(0, 50),
    seed=st.integers(0, 2**16),
)
def test_ids_are_unique_keep_old_ones_and_never_reuse(
    new: int, old: int, high_water: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    prev_ids = sorted(rng.choice(np.arange(1, high_water + 9), size=old, replace=False).tolist())
    top = max([high_water, *prev_ids])
    ids = match_ids(rng.normal(size=(new, 3)), rng.normal(size=(old, 3)) if old else None,
                    prev_ids, high_water=high_water)  # fmt: skip
    assert len(ids) == new and len(set(ids)) == new
    kept = [i for i in ids if i in prev_ids]
    assert len(kept) == min(new, old)  # every possible match is made
    assert all(i > top for i in ids if i not in prev_ids)  # fresh ids above the high-water mark
