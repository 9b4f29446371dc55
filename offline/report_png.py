"""PNG exports of the report's key charts, drawn with matplotlib.

Why matplotlib and not plotly's own export: plotly writes PNGs through kaleido, which (since
kaleido 1.0) drives an installed Chrome and breaks whenever that browser is missing, too old or
sandbox-restricted; matplotlib's Agg backend is pure C++/Python, needs no browser, no display
and no network, so the exports work the same on a laptop and on a clean CI machine. The
figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot`` global state).

>>> mpl_text("Income (k$) $x$")
'Income (k\\\\$) \\\\$x\\\\$'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from offline.charts import segment_color
from offline.report_data import ReportData
from offline.result import FitResult

DPI = 110


def mpl_text(text: object) -> str:
    """Data text for matplotlib: ``$`` would start mathtext, so it is escaped."""
    return str(text).replace("$", r"\$")


def elbow_silhouette(curve: pd.DataFrame, knee_k: int | None, chosen_k: int | None) -> Figure:
    """Inertia (knee marked) and silhouette by k, side by side."""
    fig = Figure(figsize=(11, 4.2), dpi=DPI, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(curve["k"], curve["inertia"], marker="o")
    if knee_k is not None and (curve["k"] == knee_k).any():
        y = float(curve.loc[curve["k"] == knee_k, "inertia"].iloc[0])
        ax1.plot(
            [knee_k], [y], marker="*", markersize=18, color="#d62728", label=f"knee k={knee_k}"
        )
        ax1.legend()
    ax1.set(title="Elbow: K-Means inertia by k", xlabel="k", ylabel="inertia")
    if "silhouette" in curve:
        ax2.plot(curve["k"], curve["silhouette"], marker="o", color="#2ca02c")
    if chosen_k is not None:
        ax2.axvline(chosen_k, linestyle=":", color="#888", label=f"chosen k={chosen_k}")
        ax2.legend()
    ax2.set(title="Silhouette by k", xlabel="k", ylabel="silhouette")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return fig


def scatter(
    x: np.ndarray, y: np.ndarray, labels: np.ndarray, names: Sequence[str], axes: tuple[str, str]
) -> Figure:
    """Customers on two features, coloured by segment."""
    fig = Figure(figsize=(8, 6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for pos, name in enumerate(names):
        mask = labels == pos
        ax.scatter(
            x[mask], y[mask], s=18, alpha=0.75, color=segment_color(pos), label=mpl_text(name)
        )
    title = f"Segments: {axes[1]} vs {axes[0]}"
    ax.set(xlabel=mpl_text(axes[0]), ylabel=mpl_text(axes[1]), title=mpl_text(title))
    ax.legend(fontsize="small", loc="best")
    ax.grid(alpha=0.3)
    return fig


def sizes(names: Sequence[str], counts: Sequence[int]) -> Figure:
    """Customers per segment."""
    fig = Figure(figsize=(8, 4.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(names))
    bars = ax.bar(pos, counts, color=[segment_color(i) for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{int(c):,}" for c in counts])
    ax.set_xticks(pos, [mpl_text(n) for n in names], rotation=20, ha="right")
    ax.set(ylabel="customers", title="Segment sizes")
    return fig


def profile_heatmap(z: pd.DataFrame) -> Figure:
    """Segments x features z-scores with the values written in the cells."""
    values = z.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    fig = Figure(figsize=(max(6, 1.3 * z.shape[1] + 3), max(3, 0.6 * z.shape[0] + 1.5)), dpi=DPI,
                 layout="constrained")  # fmt: skip
    ax = fig.subplots()
    im = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(range(z.shape[1]), [mpl_text(c) for c in z.columns], rotation=20, ha="right")
    ax.set_yticks(range(z.shape[0]), [mpl_text(i) for i in z.index])
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:+.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="SD from the population")
    ax.set_title("Segment profiles (z-scores)")
    return fig


def separation(sep: pd.Series) -> Figure:
    """Per-feature ANOVA F, largest on top."""
    s = sep.sort_values(ascending=True)
    fig = Figure(figsize=(8, max(2.5, 0.45 * len(s) + 1.2)), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.barh([mpl_text(i) for i in s.index], s.to_numpy(dtype=float), color="#636efa")
    ax.set(xlabel="ANOVA F", title="Which features separate the segments")
    return fig


def write_pngs(result: FitResult, data: ReportData, out_dir: Path) -> list[Path]:
    """Write the key charts as PNG files under ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Figure] = {
        "elbow_silhouette": elbow_silhouette(result.kmeans_curve, result.knee_k, len(data.names)),
        "sizes": sizes(data.names, data.sizes.tolist()),
        "profile_heatmap": profile_heatmap(data.zscores),
        "separation": separation(result.separation),
    }
    if len(data.top_features) == 2:
        fx, fy = data.top_features
        figs["scatter"] = scatter(
            result.customers[fx].to_numpy()[data.sample],
            result.customers[fy].to_numpy()[data.sample],
            np.asarray(result.labels)[data.sample],
            data.names,
            (fx, fy),
        )
    paths = []
    for name, fig in figs.items():
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths
