"""Stable segment ids across re-fits.

New centroids are matched to the previous model's by centroid distance with the
Hungarian algorithm, in the *new* model's space (previous centroids are un-scaled with
the previous scaler and re-scaled with the new one; the features must be the same).
A new cluster without a match gets a fresh id above every id ever issued (the high-water
mark travels in the model as ``id_high_water``), so an id is never reused.

>>> prev = np.array([[0.0, 0.0], [10.0, 10.0]])
>>> match_ids(np.array([[10.0, 9.0], [0.0, 1.0], [5.0, -20.0]]), prev, [7, 3], high_water=7)
[3, 7, 8]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from state.model import SegmentModel

HIGH_WATER_KEY = "id_high_water"


def match_ids(
    new_centroids: np.ndarray,
    previous_centroids: np.ndarray | None,
    previous_ids: Sequence[int] = (),
    *,
    high_water: int = 0,
) -> list[int]:
    """Id for each new centroid: the matched previous id, or a fresh one (> high_water)."""
    k = len(new_centroids)
    ids: list[int | None] = [None] * k
    if previous_centroids is not None and len(previous_centroids):
        cost = ((new_centroids[:, None, :] - previous_centroids[None, :, :]) ** 2).sum(axis=2)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols, strict=True):
            ids[r] = int(previous_ids[c])
    top = max([high_water, *previous_ids]) if previous_ids else high_water
    out = []
    for i in ids:
        if i is None:
            top += 1
            i = top
        out.append(i)
    return out


def previous_in_new_space(
    previous: SegmentModel, features: Sequence[str], mean: np.ndarray, scale: np.ndarray
) -> np.ndarray | None:
    """The previous model's centroids in the new model's scaled space (None if incomparable)."""
    if tuple(previous.features) != tuple(features):
        return None
    c = np.asarray(previous.centroids, dtype=float)
    unscaled = c * np.asarray(previous.scaler_scale) + np.asarray(previous.scaler_mean)
    return (unscaled - mean) / scale


def high_water(previous: SegmentModel | None) -> int:
    """The highest segment id ever issued up to ``previous`` (0 without a previous model)."""
    if previous is None:
        return 0
    ids = [s.id for s in previous.segments]
    return int(max([int(previous.extra.get(HIGH_WATER_KEY, 0)), *ids]))


def transition_matrix(
    old: pd.Series, new: pd.Series, *, old_names: dict | None = None, new_names: dict | None = None
) -> pd.DataFrame:
    """Counts of customers by (old segment, new segment) for customers present in both.

    ``old`` and ``new`` are segment ids indexed by customer id; labels may be renamed.
    """
    both = old.index.intersection(new.index)
    table = pd.crosstab(old.loc[both], new.loc[both]).rename_axis(index="old", columns="new")
    if old_names:
        table = table.rename(index=lambda i: f"{i} {old_names.get(i, '')}".strip())
    if new_names:
        table = table.rename(columns=lambda i: f"{i} {new_names.get(i, '')}".strip())
    return table
