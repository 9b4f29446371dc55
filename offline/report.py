"""The offline report: one self-contained ``report.html`` plus PNG exports of the key charts.

:func:`write_report` is the entry point. The page embeds plotly.js once, inline, so it opens
offline; every chart is an interactive plotly figure built by :mod:`offline.charts`. Large
inputs stay light: histograms are binned here and scatter plots show a fixed-size random
sample (stated on the page). Every string that comes from data is HTML-escaped.

The PNG exports are drawn with matplotlib (:mod:`offline.report_png`), which needs no browser.
"""

from __future__ import annotations

import html
import logging
import string
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from offline import charts, report_png
from offline.report_data import ReportData, pca_2d, prepare, top_categories
from offline.report_html import (
    cleaning_table,
    comparison_table,
    fmt,
    pct,
    rfm_section,
    segment_cards,
    tree_rules_table,
)
from offline.result import FitResult

logger = logging.getLogger(__name__)

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def build_figures(result: FitResult, data: ReportData) -> dict[str, go.Figure]:
    """Every chart of the page, keyed by its element id suffix, in page order."""
    figs: dict[str, go.Figure] = {}
    cust = result.customers
    if data.distribution_columns:
        figs["distributions"] = charts.distributions(cust, data.distribution_columns)
        if len(data.distribution_columns) >= 2:
            figs["correlation"] = charts.correlation_heatmap(cust, data.distribution_columns)
    chosen_k = len(data.names)
    figs["elbow"] = charts.elbow(result.kmeans_curve, result.knee_k)
    figs["quality"] = charts.quality_curves(result.kmeans_curve, chosen_k)
    labels = np.asarray(result.labels)[data.sample]
    hover = [charts.esc(i) for i in cust.index[data.sample]]
    if len(data.top_features) == 2:
        fx, fy = data.top_features
        figs["scatter"] = charts.segment_scatter(
            cust[fx].to_numpy()[data.sample],
            cust[fy].to_numpy()[data.sample],
            labels,
            data.names,
            (fx, fy),
            f"{fy} vs {fx}",
            hover,
        )
    X = np.asarray(result.X, dtype=float)
    if X.ndim == 2 and X.shape[1] >= 2:
        coords, ratio = pca_2d(X)
        figs["pca"] = charts.segment_scatter(
            coords[data.sample, 0],
            coords[data.sample, 1],
            labels,
            data.names,
            (f"PC1 ({ratio[0]:.0%} of variance)", f"PC2 ({ratio[1]:.0%} of variance)"),
            "PCA projection of the clustering space",
            hover,
        )
    figs["sizes"] = charts.segment_sizes(data.names, data.sizes.tolist())
    figs["profiles"] = charts.profile_heatmap(data.zscores)
    figs["separation"] = charts.separation_bar(result.separation)
    if result.linkage is not None and len(result.linkage):
        figs["dendrogram"] = charts.dendrogram(np.asarray(result.linkage))
    if result.k_distance is not None and len(result.k_distance):
        figs["kdistance"] = charts.k_distance(result.k_distance, result.dbscan_eps)
    if result.transition is not None and not result.transition.empty:
        figs["transition"] = charts.transition_heatmap(result.transition)
    return figs


def _figure_html(key: str, fig: go.Figure) -> str:
    div = pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{key}", config=PLOTLY_CONFIG
    )
    return f'<div class="chart">{div}</div>'


def _section(sid: str, title: str, *parts: str) -> tuple[str, str, str]:
    body = "\n".join(p for p in parts if p)
    return sid, title, f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _p(text: str, cls: str = "note") -> str:
    """A paragraph of already-escaped text."""
    return f'<p class="{cls}">{text}</p>'


def _sections(
    result: FitResult, data: ReportData, figs: dict[str, go.Figure]
) -> list[tuple[str, str, str]]:
    f = {k: _figure_html(k, v) for k, v in figs.items()}
    e = html.escape
    n = len(result.labels)
    sample_note = (
        f"Scatter plots show a random sample of {len(data.sample):,} of {n:,} customers."
        if len(data.sample) < n
        else f"Scatter plots show all {n:,} customers."
    )
    if len(data.top_features) == 2:
        sample_note = (
            f"The first scatter plot uses the two features with the highest ANOVA F "
            f"({data.top_features[0]} and {data.top_features[1]}). {sample_note}"
        )
    sil_note = (
        f"Silhouette scores were computed on a random sample of {result.silhouette_sample_size:,} customers."
        if result.silhouette_sample_size
        else "Silhouette scores were computed on every customer."
    )
    knee = (
        f"The knee rule puts the elbow at k = {result.knee_k}."
        if result.knee_k
        else "No clear knee was found in the inertia curve."
    )
    out = [
        _section(
            "data-quality",
            "Data quality",
            _p("Every cleaning rule and how many rows it touched."),
            cleaning_table(result.cleaning),
        ),
        _section(
            "distributions",
            "Distributions and correlations",
            f.get("distributions", _p("No numeric feature to show.")),
            f.get("correlation", ""),
        ),
        _section(
            "choosing-k",
            "Choosing the segmentation",
            _p(e(result.selection_sentence), "sentence"),
            f["elbow"],
            f["quality"],
            _p(f"{e(knee)} {e(sil_note)}"),
            "<h3>Algorithm comparison</h3>",
            comparison_table(result.comparison),
        ),
        _section(
            "segments",
            "Segments",
            f.get("scatter", ""),
            f.get("pca", ""),
            _p(e(sample_note)),
            f["sizes"],
            f["profiles"],
            _p(
                "Cells: the segment mean minus the population mean, in population standard "
                + (
                    "deviations, measured where the clustering works (after the model's "
                    "transforms, e.g. log1p for money and counts, before scaling)."
                    if data.zscore_space == "model"
                    else "deviations (raw units)."
                )
            ),
        ),
        _section(
            "drivers",
            "What drives the segmentation",
            f["separation"],
            _p(
                f"A shallow surrogate decision tree reproduces the segment labels for "
                f"<b>{pct(result.tree_agreement)}</b> of customers; its rules read:"
            ),
            tree_rules_table(result.model.segments, result.tree_rules),
        ),
    ]
    if "dendrogram" in f or "kdistance" in f:
        eps = f" DBSCAN eps = {fmt(result.dbscan_eps)}." if result.dbscan_eps is not None else ""
        out.append(
            _section(
                "structure",
                "Hierarchy and density",
                f.get("dendrogram", ""),
                f.get("kdistance", ""),
                _p(e(eps)),
            )
        )
    if "transition" in f:
        out.append(_section("transitions", "Transitions from the previous model", f["transition"]))
    out.append(
        _section(
            "cards",
            "Segment cards",
            segment_cards(
                result.model.segments,
                np.asarray(result.labels),
                data.zscores,
                result.customers,
                result.features,
                result.tree_rules,
                top_categories(result.profiles),
            ),
        )
    )
    rfm = rfm_section(result.customers, data.names, np.asarray(result.labels))
    if rfm:
        out.append(_section("rfm", "RFM summary", rfm))
    out.append(
        _section(
            "assignment",
            "Online assignment",
            _p(
                f"The published model is centroid based. Nearest-centroid assignment reproduces the "
                f"{e(result.model.algorithm)} labels for <b>{pct(result.nearest_centroid_agreement)}</b> "
                f"of the training customers. {e(sil_note)}"
            ),
        )
    )
    return out


def _summary(result: FitResult, data: ReportData) -> str:
    e = html.escape
    as_of = (
        datetime.fromtimestamp(result.as_of, tz=UTC).isoformat(timespec="seconds")
        if result.as_of is not None
        else "none (customers-only data)"
    )
    items = {
        "customers": f"{len(result.labels):,}",
        "features": ", ".join(result.features),
        "algorithm": result.model.algorithm,
        "segments": str(len(data.names)),
        "model version": result.model.version,
        "as of": as_of,
    }
    spans = "".join(f"<span>{e(k)}: <b>{e(v)}</b></span>" for k, v in items.items())
    out = f'<div class="summary">{spans}</div>'
    if result.weak_structure:
        msg = result.weak_structure_message or (
            "Weak cluster structure: the data shows no natural groups. The segments below are "
            "still a usable partition of the customers; read them as bands, not as types."
        )
        out += (
            '<div class="warning" id="weak-structure" role="alert"><strong>Weak structure'
            f"</strong>{e(msg)}</div>"
        )
    return out


def build_html(
    result: FitResult, data: ReportData | None = None, title: str = "Customer segmentation report"
) -> str:
    """The whole page as a string (pure apart from reading the packaged template)."""
    data = data if data is not None else prepare(result)
    figs = build_figures(result, data)
    sections = _sections(result, data, figs)
    templates = resources.files("offline.templates")
    page = string.Template(templates.joinpath("report.html").read_text(encoding="utf-8"))
    from state.cli import package_version

    return page.substitute(
        title=html.escape(title),
        css=templates.joinpath("report.css").read_text(encoding="utf-8"),
        plotlyjs=get_plotlyjs(),
        n_figures=str(len(figs)),
        summary=_summary(result, data),
        nav="".join(f'<li><a href="#{sid}">{html.escape(t)}</a></li>' for sid, t, _ in sections),
        body="\n".join(s for _, _, s in sections),
        generator_version=html.escape(package_version()),
    )


def write_report(result: FitResult, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` and the PNG exports under ``out_dir/charts/``.

    Returns the path of the HTML file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    data = prepare(result)
    path.write_text(build_html(result, data), encoding="utf-8")
    pngs = report_png.write_pngs(result, data, out_dir / "charts")
    logger.info("report written path=%s bytes=%d pngs=%d", path, path.stat().st_size, len(pngs))
    return path
