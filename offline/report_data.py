"""What the report's charts need, derived once from a FitResult: pure functions, no I/O.

Segment names and sizes, the profile z-scores, which columns get a histogram, the two most
telling features and the fixed-size random sample shown in scatter plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from offline.result import FitResult
from state.model import Segment

MAX_SCATTER_POINTS = 3000
MAX_DISTRIBUTIONS = 9
# substrings of column names worth a histogram besides the clustering features
DISTRIBUTION_HINTS = (
    "age",
    "income",
    "spend",
    "score",
    "frequency",
    "orders",
    "recency",
    "monetary",
)
NON_FEATURE_COLUMNS = frozenset(
    {"segment_id", "segment_name", "rfm_r", "rfm_f", "rfm_m", "rfm_score"}
)


@dataclass(frozen=True, kw_only=True)
class ReportData:
    """What the charts need, derived once from a :class:`FitResult` (pure, no I/O)."""

    names: list[str]  # segment names, by label position
    sizes: np.ndarray  # customers per label position
    zscores: pd.DataFrame  # segment names x features: mean difference from population in SDs
    zscore_space: str  # "model" (after the model's transforms) or "raw"
    distribution_columns: list[str]
    top_features: list[str]  # up to two features with the highest ANOVA F
    sample: np.ndarray  # row positions drawn for the scatter plots (sorted)


def segment_zscores(
    customers: pd.DataFrame, features: list[str], labels: np.ndarray, names: list[str]
) -> pd.DataFrame:
    """Each segment's mean minus the population mean, in population standard deviations.

    >>> df = pd.DataFrame({"a": [0.0, 0.0, 2.0, 2.0]})
    >>> segment_zscores(df, ["a"], np.array([0, 0, 1, 1]), ["low", "high"])["a"].tolist()
    [-1.0, 1.0]
    """
    data = customers[features].apply(pd.to_numeric, errors="coerce")
    sd = data.std(ddof=0).replace(0.0, np.nan)
    means = data.groupby(np.asarray(labels)).mean()
    z = ((means - data.mean()) / sd).reindex(range(len(names)))
    z.index = pd.Index(names, name="segment")
    return z


def profile_zscores(
    profiles: pd.DataFrame, segments: Sequence[Segment], features: list[str], names: list[str]
) -> tuple[pd.DataFrame | None, str]:
    """The fit's own z-scores (``z_<feature>`` columns, model space) in segment order.

    These are what the naming rules read, so cards and heatmap agree with the descriptions.
    ``(None, "raw")`` when the profiles do not carry them.

    >>> prof = pd.DataFrame({"z_a": [1.0, -1.0]}, index=[7, 3])
    >>> z, space = profile_zscores(prof, [Segment(id=3, name="x"), Segment(id=7, name="y")], ["a"], ["x", "y"])
    >>> z["a"].tolist(), space
    ([-1.0, 1.0], 'model')
    """
    cols = [f"z_{f}" for f in features]
    ids = [s.id for s in segments]
    if not all(c in profiles for c in cols) or not set(ids) <= set(profiles.index):
        return None, "raw"
    z = profiles.loc[ids, cols].astype(float)
    z.columns = pd.Index(features)
    z.index = pd.Index(names, name="segment")
    return z, "model"


def distribution_columns(customers: pd.DataFrame, features: list[str]) -> list[str]:
    """The clustering features, then other numeric columns named like age/income/spend/...

    >>> df = pd.DataFrame({"b": [1], "age": [30], "rfm_r": [5], "gender": ["F"], "orders": [2]})
    >>> distribution_columns(df, ["b"])
    ['b', 'age', 'orders']
    """
    cols = [f for f in features if f in customers]
    for col in customers.columns:
        name = str(col).lower()
        if (
            col not in cols
            and col not in NON_FEATURE_COLUMNS
            and any(h in name for h in DISTRIBUTION_HINTS)
            and pd.api.types.is_numeric_dtype(customers[col])
        ):
            cols.append(col)
    return cols[:MAX_DISTRIBUTIONS]


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a fixed-size random sample (all rows when ``n <= limit``).

    >>> sample_rows(5, 10).tolist(), len(sample_rows(100, 10))
    ([0, 1, 2, 3, 4], 10)
    """
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def prepare(result: FitResult) -> ReportData:
    """Derive the chart inputs from a fit result."""
    names = [s.name for s in result.model.segments]
    labels = np.asarray(result.labels)
    top = [f for f in result.separation.sort_values(ascending=False).index if f in result.customers]
    zscores, space = profile_zscores(result.profiles, result.model.segments, result.features, names)
    if zscores is None:
        zscores = segment_zscores(result.customers, result.features, labels, names)
    return ReportData(
        names=names,
        sizes=np.bincount(labels, minlength=len(names)),
        zscores=zscores,
        zscore_space=space,
        distribution_columns=distribution_columns(result.customers, result.features),
        top_features=[str(f) for f in top[:2]],
        sample=sample_rows(len(labels), MAX_SCATTER_POINTS, int(result.meta.get("seed", 0) or 0)),
    )


def top_categories(profiles: pd.DataFrame) -> dict[int, str]:
    """Segment id -> its top categories, when the profiles carry them.

    >>> top_categories(pd.DataFrame({"top_categories": ["books, toys", None]}, index=[3, 4]))
    {3: 'books, toys'}
    """
    if "top_categories" not in profiles:
        return {}
    col = profiles["top_categories"]
    return {int(i): str(v) for i, v in col.items() if isinstance(v, str) and v}


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``X`` on its first two principal components; returns (coords, explained ratio)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(X)
    return pca.transform(X), pca.explained_variance_ratio_
