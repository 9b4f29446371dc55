"""What ``segstream offline fit`` produces, in memory: the contract between the
pipeline (load, clean, select, name) and the report / artefact writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from state.model import SegmentModel


@dataclass(frozen=True, kw_only=True)
class CleaningStep:
    """One cleaning rule and how many rows it touched (reported, never silent)."""

    rule: str  # e.g. "drop rows missing customer id", "impute median", "cap outliers (IQR)"
    column: str  # "*" for whole-row rules
    rows_affected: int
    action: str  # "dropped", "imputed", "capped", "kept", "flagged"


@dataclass(kw_only=True)
class FitResult:
    """Everything the report and the artefacts need from one fit."""

    # One row per customer, index = customer id (str). Holds every feature column (raw units),
    # the profile columns, "segment_id", "segment_name", RFM columns
    # ("rfm_r", "rfm_f", "rfm_m", "rfm_score", "rfm_segment") when transactions were given.
    customers: pd.DataFrame
    features: list[str]  # feature columns used for clustering, in model order
    X: np.ndarray  # the clustering matrix (transformed + scaled), rows aligned with customers
    labels: np.ndarray  # chosen labels (position in model.segments), aligned with customers
    model: SegmentModel
    cleaning: list[CleaningStep]
    # K-Means sweep: columns k, inertia, silhouette, davies_bouldin, calinski_harabasz, stability
    kmeans_curve: pd.DataFrame
    knee_k: int | None  # elbow chosen by the knee rule
    # Comparison: one row per (algorithm, setting): columns algorithm, k, silhouette,
    # davies_bouldin, calinski_harabasz, bic (gmm), noise_share (dbscan), stability, chosen (bool)
    comparison: pd.DataFrame
    selection_sentence: str  # the selection rule in one sentence, as the report prints it
    weak_structure: bool  # best silhouette below the threshold
    weak_structure_message: str | None
    silhouette_sample_size: int | None  # None when silhouette used every row
    nearest_centroid_agreement: float  # share of rows whose nearest centroid = chosen label
    profiles: pd.DataFrame  # segments x statistics (size, share, means, medians, z-scores)
    separation: pd.Series  # per-feature ANOVA F (index = feature)
    tree_rules: dict[int, str]  # segment id -> plain-words rule of the surrogate tree
    tree_agreement: float  # surrogate tree's agreement with the cluster labels
    linkage: np.ndarray | None = None  # Ward linkage (on a sample) for the dendrogram
    k_distance: np.ndarray | None = None  # sorted k-distances used to pick DBSCAN eps
    dbscan_eps: float | None = None
    transition: pd.DataFrame | None = None  # old segment x new segment counts, when re-fitting
    as_of: float | None = None  # snapshot time (epoch s), None for customers-only data
    meta: dict[str, Any] = field(default_factory=dict)  # inputs, seed, timings, data fingerprint
    states: pd.DataFrame | None = None  # CustomerState fields by customer id, for publish
