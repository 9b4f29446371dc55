"""Model selection reproduces the published Mall results and finds known groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from offline.fit import FitOptions, fit
from offline.load import load_customers
from offline.selection import SegmentSelector, knee_index

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUICK = {"algorithms": ("kmeans",), "n_bootstrap": 3}


@pytest.fixture(scope="module")
def mall() -> pd.DataFrame:
    return load_customers(DATA / "Mall_Customers.csv")


def test_mall_income_and_score_raw_chooses_k5_with_published_silhouette_and_sizes(mall) -> None:
    r = fit(
        mall, None, FitOptions(features=("annual_income", "spending_score"), scaler="none", **QUICK)
    )
    assert len(r.model.segments) == 5
    assert r.model.metrics["silhouette"] == pytest.approx(0.554, abs=0.002)
    assert sorted(np.bincount(r.labels).tolist(), reverse=True) == [81, 39, 35, 23, 22]
    assert list(r.model.weights) == [81, 39, 35, 23, 22]
    assert r.knee_k == 5
    inertia = r.kmeans_curve.set_index("k")["inertia"]
    assert inertia[4] == pytest.approx(73_680, rel=1e-3)
    assert inertia[5] == pytest.approx(44_449, rel=1e-3)
    centres = sorted(tuple(round(v, 1) for v in c) for c in r.model.centroids)
    assert centres == [(25.7, 79.4), (26.3, 20.9), (55.3, 49.5), (86.5, 82.1), (88.2, 17.1)]
    assert r.nearest_centroid_agreement == 1.0
    assert r.silhouette_sample_size is None
    assert not r.weak_structure
    assert "k=5" in r.selection_sentence


def test_mall_age_income_score_raw_chooses_k6(mall) -> None:
    feats = ("age", "annual_income", "spending_score")
    r = fit(mall, None, FitOptions(features=feats, scaler="none", **QUICK))
    assert len(r.model.segments) == 6
    assert r.model.metrics["silhouette"] == pytest.approx(0.452, abs=0.002)


def test_mall_scaled_comparison_matches_published_ward_gmm_and_kmeans_indices(mall) -> None:
    r = fit(
        mall,
        None,
        FitOptions(features=("annual_income", "spending_score"), k_range=(4, 5, 6), n_bootstrap=2),
    )
    t = r.comparison.set_index(["algorithm", "k"])
    assert t.loc[("kmeans", 5), "silhouette"] == pytest.approx(0.5547, abs=0.002)
    assert t.loc[("kmeans", 5), "davies_bouldin"] == pytest.approx(0.572, abs=0.002)
    assert t.loc[("kmeans", 5), "calinski_harabasz"] == pytest.approx(248.6, abs=0.5)
    assert t.loc[("agglomerative", 5), "silhouette"] == pytest.approx(0.5538, abs=0.002)
    assert t.loc[("gmm", 5), "silhouette"] == pytest.approx(0.5537, abs=0.002)
    gmm = r.comparison[r.comparison["algorithm"] == "gmm"].set_index("k")["bic"]
    assert gmm.idxmin() == 5
    db = r.comparison[r.comparison["algorithm"] == "dbscan"].iloc[0]
    assert 0 <= db["noise_share"] < 0.2 and r.dbscan_eps is not None and r.dbscan_eps > 0
    assert r.linkage is not None and r.linkage.shape == (199, 4)
    assert int(r.comparison["chosen"].sum()) == 1
    assert r.model.algorithm == "kmeans" and r.model.scaler_kind == "standard"


def test_synthetic_blobs_are_recovered() -> None:
    X, truth = make_blobs(n_samples=900, centers=4, n_features=3, cluster_std=1.2, random_state=7)
    customers = pd.DataFrame(X, columns=["a", "b", "c"]).assign(
        customer_id=[f"c{i}" for i in range(900)]
    )
    r = fit(customers, None, FitOptions(k_range=tuple(range(2, 8)), n_bootstrap=2, seed=1))
    assert len(r.model.segments) == 4
    assert adjusted_rand_score(truth, r.labels) >= 0.9
    # the published model assigns like the chosen labels
    assert (r.model.nearest(r.X) == r.labels).mean() >= 0.99


def test_shopping_trends_raises_the_weak_structure_warning() -> None:
    shop = load_customers(DATA / "shopping_trends.csv")
    r = fit(shop, None, FitOptions(k_range=(2, 3, 4, 5), algorithms=("kmeans",), n_bootstrap=2))
    assert r.weak_structure
    assert r.weak_structure_message and "Weak cluster structure" in r.weak_structure_message
    assert r.comparison["silhouette"].max() < 0.25
    assert len(r.model.segments) >= 2  # still a usable segmentation


def test_another_algorithm_wins_only_by_a_margin_and_is_made_centroid_based() -> None:
    # two concentric rings: density-based clustering separates them, K-Means cannot
    rng = np.random.default_rng(3)
    angle = rng.uniform(0, 2 * np.pi, 600)
    radius = np.where(np.arange(600) < 300, 1.0, 6.0) + rng.normal(0, 0.05, 600)
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    sel = SegmentSelector(k_range=(2, 3), n_bootstrap=0, algorithms=("kmeans", "dbscan")).fit(X)
    chosen = sel.comparison_[sel.comparison_["chosen"]].iloc[0]
    km_best = sel.comparison_[sel.comparison_["algorithm"] == "kmeans"]["silhouette"].max()
    if chosen["algorithm"] != "kmeans":
        assert chosen["silhouette"] > km_best + sel.margin
    assert 0.0 <= sel.nearest_centroid_agreement_ <= 1.0
    assert sel.centroids_.shape == (sel.k_, 2)


def test_knee_of_a_convex_decreasing_curve() -> None:
    assert knee_index(np.array([10.0, 3.0, 2.0, 1.5, 1.2, 1.0])) == 1
    assert knee_index(np.array([1.0, 2.0])) == 0


def test_large_data_uses_fixed_size_samples_and_states_them() -> None:
    X, _ = make_blobs(n_samples=12_000, centers=3, n_features=2, random_state=0)
    sel = SegmentSelector(
        k_range=(2, 3, 4), n_bootstrap=0, algorithms=("kmeans",), silhouette_sample=1_000,
        selection_sample=4_000,
    ).fit(X)  # fmt: skip
    assert sel.silhouette_sample_size_ == 1_000
    assert sel.selection_sample_size_ == 4_000
    assert len(sel.labels_) == 12_000 and sel.k_ == 3
