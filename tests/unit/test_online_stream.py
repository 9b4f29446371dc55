"""A million simulated events: the online centroids stay where an offline refit puts them.

The simulation has four groups of customers in three (already scaled) features. Purchase
rates are heavy tailed (Pareto), and the 10% most frequent buyers sit 0.8 units to one
side of their group, so that weighting by event would drag centroids towards them. A
customer's features after n events are the running mean of n noisy observations, so
points move as customers buy. The offline model is a K-Means fit on the snapshot before
the stream; the stream is consumed in batches of 5,000 events, grouped by customer as
the consumer does, through the same ``move_many`` maths as ``learn_one`` (equivalence is
tested in ``test_online.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.cluster import KMeans

from state.model import SegmentModel
from state.online import OnlineSegmenter, Previous

K, D = 4, 3
MEANS = np.array([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.5, 0.0], [0.0, -1.0, 2.5]])


@dataclass
class Outcome:
    online: np.ndarray  # final online centroids
    refit: np.ndarray  # offline refit on the final customer states
    distance: float  # largest centroid distance, in standard units of the final states
    agreement: float  # share of customers with the same segment from both


def simulate(
    *,
    weighting: str,
    half_life_events: float | None,
    n_customers: int = 20_000,
    n_events: int = 1_000_000,
    batch: int = 5_000,
    seed: int = 7,
) -> Outcome:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, K, n_customers)
    mu = MEANS[group] + rng.normal(0, 0.6, (n_customers, D))
    rate = rng.pareto(1.2, n_customers) + 0.05
    mu[rate > np.quantile(rate, 0.9), 0] += 0.8  # frequent buyers on one side
    n0 = rng.integers(1, 4, n_customers).astype(float)  # history before the snapshot
    sums = mu * n0[:, None] + rng.normal(0, 1, (n_customers, D)) * np.sqrt(n0)[:, None]
    counts = n0.copy()
    snapshot = sums / counts[:, None]

    km = KMeans(K, n_init=4, random_state=0).fit(snapshot)
    names = [f"f{i}" for i in range(D)]
    model = SegmentModel.from_dict(
        {
            "schema_version": 1,
            "version": "sim",
            "features": names,
            "imputation": dict.fromkeys(names, 0.0),
            "scaler": {"kind": "none", "mean": [0.0] * D, "scale": [1.0] * D},
            "centroids": km.cluster_centers_.tolist(),
            "weights": np.bincount(km.labels_, minlength=K).astype(float).tolist(),
            "segments": [{"id": i + 1, "name": f"S{i}"} for i in range(K)],
            "algorithm": "kmeans",
        }
    )
    seg = OnlineSegmenter.from_model(model, half_life_events=half_life_events)
    # every customer's contribution: the offline snapshot point in its offline cluster
    prev_points, prev_segments = snapshot.copy(), km.labels_.copy()
    prev_clocks = np.zeros(n_customers)
    p = rate / rate.sum()
    for _ in range(n_events // batch):
        who = rng.choice(n_customers, batch, p=p)
        obs = mu[who] + rng.normal(0, 1, (batch, D))
        for j in range(D):
            sums[:, j] += np.bincount(who, weights=obs[:, j], minlength=n_customers)
        counts += np.bincount(who, minlength=n_customers)
        if weighting == "move":  # one point per customer, moved
            u = np.unique(who)
            points = sums[u] / counts[u, None]
            prev = Previous(
                points=prev_points[u],
                segments=prev_segments[u],
                clocks=prev_clocks[u],
                mask=np.ones(len(u), dtype=bool),
            )
            moves = seg.move_many(points, previous=prev)
            prev_points[u], prev_segments[u], prev_clocks[u] = points, moves.segments, moves.clocks
        else:  # naive: one new point per event
            seg.move_many(sums[who] / counts[who, None])

    final = sums / counts[:, None]
    refit = KMeans(K, init=seg.centroids, n_init=1).fit(final)
    std = final.std(axis=0)
    distance = np.sqrt((((seg.centroids - refit.cluster_centers_) / std) ** 2).sum(axis=1)).max()
    agreement = float((seg.predict_points(final) == refit.labels_).mean())
    return Outcome(seg.centroids, refit.cluster_centers_, float(distance), agreement)


@pytest.mark.slow
@pytest.mark.parametrize("half_life_events", [None, 250_000.0, 50_000.0])
def test_a_million_events_stay_with_an_offline_refit(half_life_events: float | None) -> None:
    out = simulate(weighting="move", half_life_events=half_life_events)
    assert out.distance <= 0.25, out
    assert out.agreement >= 0.95, out


@pytest.mark.slow
def test_weighting_by_event_would_let_frequent_buyers_drag_centroids() -> None:
    """The contrast that motivates moves: one point per event drifts past the tolerance."""
    moved = simulate(weighting="move", half_life_events=250_000.0)
    naive = simulate(weighting="event", half_life_events=250_000.0)
    assert naive.distance > 0.25 > moved.distance
    assert naive.distance > 10 * moved.distance
