"""The offline report: one self-contained HTML page, every section present, data escaped, PNGs.

Until ``offline.fit`` lands, FitResult objects are built here with plain scikit-learn
(test scaffolding, not a second pipeline).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from scipy.cluster.hierarchy import linkage
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.feature_selection import f_classif
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from offline.report import build_html, prepare, segment_zscores, write_report
from offline.result import CleaningStep, FitResult
from state.model import Segment, SegmentModel

MALL = Path(__file__).resolve().parents[3] / "shared" / "data" / "Mall_Customers.csv"
HOSTILE = '<script>alert("x")</script>'


def make_fit_result(
    frame: pd.DataFrame,
    features: list[str],
    k: int,
    *,
    names: list[str] | None = None,
    weak: bool = False,
    with_transition: bool = False,
) -> FitResult:
    """A FitResult from plain scikit-learn (K-Means on standardised ``features``)."""
    scaler = StandardScaler().fit(frame[features])
    X = scaler.transform(frame[features])
    rows = []
    for kk in range(2, 8):
        km = KMeans(n_clusters=kk, n_init=3, random_state=42).fit(X)
        rows.append(
            {
                "k": kk,
                "inertia": km.inertia_,
                "silhouette": silhouette_score(X, km.labels_),
                "davies_bouldin": davies_bouldin_score(X, km.labels_),
                "calinski_harabasz": calinski_harabasz_score(X, km.labels_),
                "stability": 0.9,
            }
        )
    curve = pd.DataFrame(rows)
    km = KMeans(n_clusters=k, n_init=10, random_state=42).fit(X)
    labels = km.labels_
    names = names or [f"Segment {i}" for i in range(k)]
    segments = tuple(
        Segment(id=i + 1, name=n, description=f"about {n}", action=f"mail {n}")
        for i, n in enumerate(names)
    )
    model = SegmentModel(
        version="test-v1",
        features=tuple(features),
        transforms={},
        imputation={f: 0.0 for f in features},
        scaler_kind="standard",
        scaler_mean=tuple(scaler.mean_),
        scaler_scale=tuple(scaler.scale_),
        centroids=tuple(tuple(c) for c in km.cluster_centers_),
        weights=tuple(float(c) for c in np.bincount(labels)),
        segments=segments,
        algorithm="kmeans",
    )
    customers = frame.copy()
    customers["segment_id"] = [segments[lab].id for lab in labels]
    customers["segment_name"] = [segments[lab].name for lab in labels]
    sil = float(silhouette_score(X, labels))
    comparison = pd.DataFrame(
        [
            {"algorithm": "kmeans", "k": k, "silhouette": sil, "chosen": True},
            {"algorithm": "gmm", "k": k, "silhouette": sil - 0.01, "bic": 1234.5, "chosen": False},
            {
                "algorithm": "dbscan",
                "k": k + 1,
                "silhouette": 0.3,
                "noise_share": 0.1,
                "chosen": False,
            },
        ]
    )
    f_scores, _ = f_classif(X, labels)
    kd = NearestNeighbors(n_neighbors=5).fit(X).kneighbors(X)[0][:, -1]
    transition = None
    if with_transition:
        transition = pd.DataFrame(np.eye(k, dtype=int) * 10, index=names, columns=names)
    return FitResult(
        customers=customers,
        features=features,
        X=X,
        labels=labels,
        model=model,
        cleaning=[
            CleaningStep(rule="drop duplicate rows", column="*", rows_affected=0, action="dropped"),
            CleaningStep(
                rule=f"cap outliers {HOSTILE}", column="age", rows_affected=2, action="capped"
            ),
        ],
        kmeans_curve=curve,
        knee_k=k,
        comparison=comparison,
        selection_sentence=f"K-Means with k={k} has the best silhouette.",
        weak_structure=weak,
        weak_structure_message="Best silhouette 0.21 is below 0.25." if weak else None,
        silhouette_sample_size=None,
        nearest_centroid_agreement=1.0,
        profiles=pd.DataFrame({"size": np.bincount(labels)}),
        separation=pd.Series(f_scores, index=features),
        tree_rules={s.id: f"{features[0]} > {i}" for i, s in enumerate(segments)},
        tree_agreement=0.95,
        linkage=linkage(X[:200], method="ward"),
        k_distance=np.sort(kd),
        dbscan_eps=0.35,
        transition=transition,
        meta={"seed": 42},
    )


def mall_fit_result() -> FitResult:
    """Mall Customers, income + spending score, k=5."""
    raw = pd.read_csv(MALL)
    frame = pd.DataFrame(
        {
            "gender": raw["Gender"].to_numpy(),
            "age": raw["Age"].to_numpy(dtype=float),
            "annual_income": raw["Annual Income (k$)"].to_numpy(dtype=float),
            "spending_score": raw["Spending Score (1-100)"].to_numpy(dtype=float),
        },
        index=pd.Index(raw["CustomerID"].astype(str), name="customer_id"),
    )
    names = ["Average", "High-Spenders", "Careful Affluent", "Budget Shoppers", "Impulsive"]
    return make_fit_result(frame, ["annual_income", "spending_score"], 5, names=names)


def synthetic_fit_result(n: int = 600) -> FitResult:
    """Blobs with hostile strings in a customer id, a column name and a segment name."""
    X, _ = make_blobs(n_samples=n, centers=3, n_features=3, random_state=7)
    hostile_col = f"spend {HOSTILE}"
    frame = pd.DataFrame(
        {"recency": np.abs(X[:, 0]) * 10, "frequency": np.abs(X[:, 1]), hostile_col: X[:, 2] + 20},
        index=pd.Index([f"c{i}" for i in range(n - 1)] + [HOSTILE], name="customer_id"),
    )
    rng = np.random.default_rng(0)
    for col in ("rfm_r", "rfm_f", "rfm_m"):
        frame[col] = rng.integers(1, 6, n)
    frame["rfm_segment"] = np.where(frame["rfm_r"] > 3, "Champions", f"At Risk {HOSTILE}")
    names = ["Loyal Customers", f"Evil {HOSTILE}", "At-Risk"]
    return make_fit_result(
        frame,
        ["recency", "frequency", hostile_col],
        3,
        names=names,
        with_transition=True,
    )


@pytest.fixture(scope="module")
def mall() -> FitResult:
    return mall_fit_result()


@pytest.fixture(scope="module")
def synthetic() -> FitResult:
    return synthetic_fit_result(300)


@pytest.fixture(scope="module")
def mall_page(mall: FitResult) -> str:
    return build_html(mall)


def test_page_is_self_contained(mall_page: str) -> None:
    plotlyjs = get_plotlyjs()
    assert mall_page.count(plotlyjs) == 1  # plotly.js inline, once
    rest = mall_page.replace(plotlyjs, "")
    assert "<script src" not in rest.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest, re.I)
    assert "cdn.plot.ly" not in rest


def test_every_required_section_is_present(mall_page: str) -> None:
    for sid in ("data-quality", "distributions", "choosing-k", "segments", "drivers", "structure",
                "cards", "assignment"):  # fmt: skip
        assert f'<section id="{sid}">' in mall_page, sid
    for fig in ("distributions", "correlation", "elbow", "quality", "scatter", "pca", "sizes",
                "profiles", "separation", "dendrogram", "kdistance"):  # fmt: skip
        assert f'id="fig-{fig}"' in mall_page, fig


def test_figure_count_is_declared(mall_page: str) -> None:
    declared = int(re.search(r'name="segstream-figures" content="(\d+)"', mall_page).group(1))
    assert declared == mall_page.count('class="plotly-graph-div"') == 11


def test_mall_cards_state_sizes_and_rules(mall: FitResult, mall_page: str) -> None:
    sizes = sorted(np.bincount(mall.labels).tolist(), reverse=True)
    assert sizes == [81, 39, 35, 23, 22]
    for seg in mall.model.segments:
        assert f'id="segment-{seg.id}"' in mall_page
        assert seg.name in mall_page
    assert "81 customers · 40.5%" in mall_page
    assert "annual_income &gt; 0" in mall_page  # tree rule, escaped
    assert "K-Means with k=5 has the best silhouette." in mall_page
    assert "reproduces the segment labels for <b>95.0%</b>" in mall_page
    assert "<b>100.0%</b> of the training customers" in mall_page  # nearest-centroid agreement
    assert "computed on every customer" in mall_page


def test_weak_structure_warning_is_prominent(synthetic: FitResult) -> None:
    weak = dataclasses.replace(
        synthetic, weak_structure=True, weak_structure_message="Best silhouette 0.21 is below 0.25."
    )
    page = build_html(weak)
    assert 'id="weak-structure" role="alert"' in page
    assert "Best silhouette 0.21 is below 0.25." in page
    assert page.index('id="weak-structure"') < page.index('<section id="data-quality">')
    assert 'id="weak-structure"' not in build_html(synthetic)


def test_data_strings_are_escaped(synthetic: FitResult) -> None:
    page = build_html(synthetic)
    head, _, body = page.partition("<main>")
    assert head.count("<script") == 2  # the plotly config and plotly.js itself
    # in the body, the only scripts are plotly's one per figure
    assert body.count("<script") == body.count('class="plotly-graph-div"')
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body  # shown, not run


def test_rfm_and_transition_sections_when_present(synthetic: FitResult, mall_page: str) -> None:
    page = build_html(synthetic)
    assert '<section id="rfm">' in page and "Champions" in page
    assert '<section id="transitions">' in page and 'id="fig-transition"' in page
    assert '<section id="rfm">' not in mall_page
    assert '<section id="transitions">' not in mall_page


def test_zscores_match_the_mall_centres(mall: FitResult) -> None:
    z = segment_zscores(mall.customers, mall.features, mall.labels, prepare(mall).names)
    # the high-spend centre (86.5, 82.1) against the population (60.56, 50.2; SD 26.2, 25.8)
    assert z["spending_score"].max() == pytest.approx((82.13 - 50.20) / 25.76, abs=0.02)
    # size-weighted z-scores sum to zero: the segments partition the population
    weighted = z.to_numpy() * np.bincount(mall.labels)[:, None]
    assert np.allclose(weighted.sum(axis=0), 0.0, atol=1e-9)


def test_scatter_is_sampled_on_large_data(synthetic: FitResult) -> None:
    n = 4000
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(synthetic.labels), n)
    big = dataclasses.replace(
        synthetic,
        customers=synthetic.customers.iloc[rows].set_axis([f"b{i}" for i in range(n)]),
        X=synthetic.X[rows],
        labels=synthetic.labels[rows],
    )
    data = prepare(big)
    assert len(data.sample) == 3000
    assert "random sample of 3,000 of 4,000 customers" in build_html(big, data)


def test_write_report_writes_html_and_pngs(tmp_path: Path, mall: FitResult) -> None:
    path = write_report(mall, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    assert path.stat().st_size < 6_000_000  # plotly.js (~4.8 MB) + a light payload
    pngs = sorted(p.name for p in (tmp_path / "out" / "charts").glob("*.png"))
    assert pngs == ["elbow_silhouette.png", "profile_heatmap.png", "scatter.png",
                    "separation.png", "sizes.png"]  # fmt: skip
    for name in pngs:
        head = (tmp_path / "out" / "charts" / name).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n"
