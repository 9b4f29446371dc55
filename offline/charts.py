"""Plotly figure builders for the offline report: one function per chart, data in, figure out.

Every function is pure: it reads plain arrays / frames, returns a ``go.Figure`` and touches no
file. Text that can come from customer data (column names, segment names, ids) must be passed
through :func:`esc` before it reaches plotly, because plotly renders a small HTML subset
(``<b>``, ``<a href>``...) inside labels; ``&lt;`` is shown as ``<``.

>>> esc("<b>Low & High</b>")
'&lt;b&gt;Low &amp; High&lt;/b&gt;'
>>> fig = segment_sizes(["A", "B"], [3, 1])
>>> [round(float(v), 2) for v in fig.data[0].customdata.ravel()]
[0.75, 0.25]
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.Dark24)
TEMPLATE = "plotly_white"
HEIGHT = 420


def esc(text: object) -> str:
    """Escape a data-derived string for plotly labels (plotly decodes &lt; &gt; &amp; only)."""
    return html.escape(str(text), quote=False)


def segment_color(position: int) -> str:
    """The colour of the segment at ``position`` in the model (stable across charts).

    >>> segment_color(0) == segment_color(len(PALETTE))
    True
    """
    return PALETTE[position % len(PALETTE)]


def _layout(fig: go.Figure, title: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(
        title=title, template=TEMPLATE, height=height, margin={"l": 60, "r": 20, "t": 60, "b": 50}
    )
    return fig


def distributions(frame: pd.DataFrame, columns: Sequence[str], bins: int = 30) -> go.Figure:
    """Histograms of ``columns`` (binned here, so the page stays small on millions of rows)."""
    cols = list(columns)
    ncols = min(3, max(1, len(cols)))
    nrows = max(1, -(-len(cols) // ncols))
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[esc(c) for c in cols])
    for i, col in enumerate(cols):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        counts, edges = np.histogram(values, bins=bins) if values.size else (np.zeros(1), [0, 1])
        centers = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
        fig.add_trace(
            go.Bar(
                x=centers,
                y=counts,
                width=np.diff(edges),
                name=esc(col),
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate=f"{esc(col)}: %{{x:.3g}}<br>customers: %{{y}}<extra></extra>",
                showlegend=False,
            ),
            row=i // ncols + 1,
            col=i % ncols + 1,
        )
    return _layout(fig, "Distributions", height=max(HEIGHT, 280 * nrows))


def correlation_heatmap(frame: pd.DataFrame, columns: Sequence[str]) -> go.Figure:
    """Pearson correlations between ``columns``, annotated, on a diverging scale."""
    corr = frame[list(columns)].apply(pd.to_numeric, errors="coerce").corr().to_numpy()
    labels = [esc(c) for c in columns]
    fig = go.Figure(
        go.Heatmap(
            z=corr,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=np.round(corr, 2),
            texttemplate="%{text}",
            hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Correlation between features")


def elbow(curve: pd.DataFrame, knee_k: int | None) -> go.Figure:
    """K-Means inertia by k with the knee (chosen by the knee rule) marked."""
    fig = go.Figure(
        go.Scatter(
            x=curve["k"],
            y=curve["inertia"],
            mode="lines+markers",
            name="inertia",
            hovertemplate="k=%{x}<br>inertia=%{y:.4g}<extra></extra>",
        )
    )
    if knee_k is not None and (curve["k"] == knee_k).any():
        y = float(curve.loc[curve["k"] == knee_k, "inertia"].iloc[0])
        fig.add_trace(
            go.Scatter(
                x=[knee_k],
                y=[y],
                mode="markers+text",
                name=f"knee (k={knee_k})",
                marker={"size": 16, "symbol": "star", "color": "#d62728"},
                text=[f"knee k={knee_k}"],
                textposition="top right",
            )
        )
    fig.update_xaxes(title="k", dtick=1)
    fig.update_yaxes(title="inertia (within-cluster sum of squares)")
    return _layout(fig, "Elbow: K-Means inertia by k")


QUALITY_METRICS: tuple[tuple[str, str], ...] = (
    ("silhouette", "silhouette (higher is better)"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
    ("stability", "bootstrap stability, mean ARI (higher is better)"),
)


def quality_curves(curve: pd.DataFrame, chosen_k: int | None = None) -> go.Figure:
    """Silhouette, Davies-Bouldin, Calinski-Harabasz and stability by k (those present)."""
    metrics = [(m, t) for m, t in QUALITY_METRICS if m in curve and curve[m].notna().any()]
    metrics = metrics or [("silhouette", "silhouette")]
    ncols = min(2, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = make_subplots(
        rows=nrows, cols=ncols, subplot_titles=[t for _, t in metrics], vertical_spacing=0.18
    )
    for i, (metric, _title) in enumerate(metrics, start=1):
        row, col = (i - 1) // ncols + 1, (i - 1) % ncols + 1
        y = curve[metric] if metric in curve else pd.Series(np.nan, index=curve.index)
        fig.add_trace(
            go.Scatter(
                x=curve["k"],
                y=y,
                mode="lines+markers",
                name=metric,
                marker_color=PALETTE[i - 1],
                hovertemplate=f"k=%{{x}}<br>{metric}=%{{y:.4f}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        if chosen_k is not None:
            fig.add_vline(x=chosen_k, line_dash="dot", line_color="#888", row=row, col=col)
        fig.update_xaxes(title="k", dtick=1, row=row, col=col)
    fig.update_layout(showlegend=False)
    return _layout(fig, "Cluster quality by k (dotted line: chosen k)", height=300 * nrows + 80)


def _segment_traces(
    fig: go.Figure,
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    hover: Sequence[str] | None,
) -> None:
    for pos, name in enumerate(names):
        mask = labels == pos
        if not mask.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=x[mask],
                y=y[mask],
                mode="markers",
                name=esc(name),
                marker={"color": segment_color(pos), "size": 7, "opacity": 0.75},
                customdata=None if hover is None else np.asarray(hover, dtype=object)[mask],
                hovertemplate=(
                    f"{esc(name)}<br>%{{x:.3g}}, %{{y:.3g}}"
                    + ("<br>customer %{customdata}" if hover is not None else "")
                    + "<extra></extra>"
                ),
            )
        )


def segment_scatter(
    x: np.ndarray,
    y: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    axis_titles: tuple[str, str],
    title: str,
    hover: Sequence[str] | None = None,
) -> go.Figure:
    """Customers in two dimensions, one trace (legend entry) per segment.

    ``labels`` are positions in ``names``; ``hover`` (e.g. escaped customer ids) is optional.
    """
    fig = go.Figure()
    _segment_traces(fig, np.asarray(x), np.asarray(y), np.asarray(labels), names, hover)
    fig.update_xaxes(title=esc(axis_titles[0]))
    fig.update_yaxes(title=esc(axis_titles[1]))
    return _layout(fig, esc(title), height=480)


def segment_sizes(names: Sequence[str], sizes: Sequence[int]) -> go.Figure:
    """Customers per segment, with the share in the hover label."""
    sizes_arr = np.asarray(sizes, dtype=float)
    share = sizes_arr / sizes_arr.sum() if sizes_arr.sum() else sizes_arr
    fig = go.Figure(
        go.Bar(
            x=[esc(n) for n in names],
            y=sizes_arr,
            marker_color=[segment_color(i) for i in range(len(names))],
            customdata=share,
            text=[f"{int(s)} ({p:.0%})" for s, p in zip(sizes_arr, share, strict=True)],
            textposition="auto",
            hovertemplate="%{x}<br>%{y} customers (%{customdata:.1%})<extra></extra>",
        )
    )
    fig.update_yaxes(title="customers")
    return _layout(fig, "Segment sizes")


def profile_heatmap(z: pd.DataFrame) -> go.Figure:
    """Segments (rows) x features (columns): mean difference from the population in SDs."""
    values = z.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if values.size and np.isfinite(values).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[esc(c) for c in z.columns],
            y=[esc(i) for i in z.index],
            zmin=-bound,
            zmax=bound,
            colorscale="RdBu",
            reversescale=True,
            text=np.round(values, 2),
            texttemplate="%{text}",
            colorbar={"title": "z"},
            hovertemplate="%{y}<br>%{x}: %{z:+.2f} SD from the population<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig,
        "Segment profiles (z-scores of the segment means)",
        height=max(HEIGHT, 60 * len(z) + 140),
    )


def separation_bar(separation: pd.Series) -> go.Figure:
    """Per-feature separation (ANOVA F), largest first."""
    s = separation.sort_values(ascending=True)
    fig = go.Figure(
        go.Bar(
            x=s.to_numpy(dtype=float),
            y=[esc(i) for i in s.index],
            orientation="h",
            marker_color="#636efa",
            hovertemplate="%{y}: F = %{x:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(title="ANOVA F (between-segment / within-segment variance)")
    return _layout(fig, "Which features separate the segments", height=max(300, 40 * len(s) + 140))


def dendrogram(linkage: np.ndarray, leaves: int = 30) -> go.Figure:
    """Ward dendrogram from a scipy linkage matrix, truncated to the last ``leaves`` merges."""
    from scipy.cluster.hierarchy import dendrogram as scipy_dendrogram

    d = scipy_dendrogram(linkage, truncate_mode="lastp", p=leaves, no_plot=True)
    xs: list[float | None] = []
    ys: list[float | None] = []
    for ic, dc in zip(d["icoord"], d["dcoord"], strict=True):
        xs.extend([*ic, None])
        ys.extend([*dc, None])
    fig = go.Figure(
        go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#444"}, hoverinfo="y", name="merge")
    )
    ticks = [5 + 10 * i for i in range(len(d["ivl"]))]
    fig.update_xaxes(tickvals=ticks, ticktext=[esc(t) for t in d["ivl"]], title="clusters (size)")
    fig.update_yaxes(title="Ward merge distance")
    return _layout(fig, "Hierarchical clustering (Ward) dendrogram")


def k_distance(distances: np.ndarray, eps: float | None, max_points: int = 2000) -> go.Figure:
    """Sorted k-nearest-neighbour distances (DBSCAN eps is read at the knee)."""
    d = np.sort(np.asarray(distances, dtype=float))
    idx = np.unique(np.linspace(0, d.size - 1, min(max_points, d.size)).astype(int))
    fig = go.Figure(
        go.Scatter(
            x=idx, y=d[idx], mode="lines", name="k-distance",
            hovertemplate="rank %{x}<br>distance %{y:.4f}<extra></extra>",
        )
    )  # fmt: skip
    if eps is not None:
        fig.add_hline(y=eps, line_dash="dash", line_color="#d62728")
        fig.add_annotation(
            x=idx[-1] if idx.size else 0, y=eps, text=f"eps = {eps:.3g}", showarrow=False,
            xanchor="right", yanchor="bottom",
        )  # fmt: skip
    fig.update_xaxes(title="points sorted by distance")
    fig.update_yaxes(title="distance to k-th neighbour")
    return _layout(fig, "DBSCAN k-distance curve")


def transition_heatmap(transition: pd.DataFrame) -> go.Figure:
    """Customers moving from old segments (rows) to new segments (columns)."""
    values = transition.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[esc(c) for c in transition.columns],
            y=[esc(i) for i in transition.index],
            colorscale="Blues",
            text=values.astype(int),
            texttemplate="%{text}",
            hovertemplate="old %{y} -> new %{x}: %{z} customers<extra></extra>",
        )
    )
    fig.update_xaxes(title="new model", type="category")
    fig.update_yaxes(title="previous model", autorange="reversed", type="category")
    return _layout(fig, "Transitions between the previous and the new segments")
