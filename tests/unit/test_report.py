"""The offline report: one self-contained HTML page, every section present, data escaped, PNGs.

The FitResult objects are real fits from :mod:`tests.report_fits` (Mall Customers, a
transactions re-fit with RFM and transitions, hostile column names, structureless noise).
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plotly.offline import get_plotlyjs

from offline.charts import esc
from offline.report import build_html, write_report
from offline.report_data import prepare, segment_zscores
from offline.report_html import html_table
from offline.result import FitResult
from tests.report_fits import (
    HOSTILE,
    hostile_fit_result,
    mall_fit_result,
    refit_result,
    structureless_fit_result,
)


@pytest.fixture(scope="module")
def mall() -> FitResult:
    return mall_fit_result()


@pytest.fixture(scope="module")
def mall_page(mall: FitResult) -> str:
    return build_html(mall)


@pytest.fixture(scope="module")
def refit() -> FitResult:
    return refit_result()


@pytest.fixture(scope="module")
def hostile() -> FitResult:
    return hostile_fit_result()


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
    meta = re.search(r'name="segstream-figures" content="(\d+)"', mall_page)
    assert meta is not None
    declared = int(meta.group(1))
    assert declared == mall_page.count('class="plotly-graph-div"') == 11


def test_mall_cards_state_sizes_names_and_rules(mall: FitResult, mall_page: str) -> None:
    assert sorted(np.bincount(mall.labels).tolist(), reverse=True) == [81, 39, 35, 23, 22]
    for seg in mall.model.segments:
        assert f'id="segment-{seg.id}"' in mall_page
        assert f"<h3>{seg.name}</h3>" in mall_page
        assert seg.action and seg.action in mall_page
        assert mall.tree_rules[seg.id].replace(">", "&gt;").replace("<", "&lt;") in mall_page
    assert "81 customers · 40.5%" in mall_page
    assert html.escape(mall.selection_sentence) in mall_page
    assert f"reproduces the segment labels for <b>{mall.tree_agreement:.1%}</b>" in mall_page
    assert "<b>100.0%</b> of the training customers" in mall_page  # nearest-centroid agreement
    assert "computed on every customer" in mall_page
    assert 'id="weak-structure"' not in mall_page


def test_comparison_table_marks_the_chosen_row(mall: FitResult, mall_page: str) -> None:
    chosen = re.findall(r'<tr class="chosen">(.*?)</tr>', mall_page)
    assert len(chosen) == 1
    assert "<td>kmeans</td>" in chosen[0] and '<td class="num">5</td>' in chosen[0]
    assert "<td>0.555</td>" in chosen[0] or '<td class="num">0.555</td>' in chosen[0]


def test_weak_structure_warning_is_prominent() -> None:
    weak = structureless_fit_result()
    assert weak.weak_structure
    page = build_html(weak)
    banner = re.search(r'<div class="warning" id="weak-structure" role="alert">(.*?)</div>', page)
    assert banner is not None
    assert page.index('id="weak-structure"') < page.index('<section id="data-quality">')
    assert weak.weak_structure_message is not None
    assert html.escape(weak.weak_structure_message) in banner.group(1)


def test_hostile_column_names_are_escaped(hostile: FitResult) -> None:
    assert any(HOSTILE in f for f in hostile.features)
    page = build_html(hostile)
    head, _, body = page.partition("<main>")
    assert head.count("<script") == 2  # the plotly config and plotly.js itself
    # in the body, the only scripts are plotly's, one per figure
    assert body.count("<script") == body.count('class="plotly-graph-div"')
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in body  # shown, not run


def test_rfm_and_transition_sections_when_present(refit: FitResult, mall_page: str) -> None:
    page = build_html(refit)
    assert '<section id="rfm">' in page
    for label in refit.customers["rfm_segment"].unique():
        assert f"<td>{label}</td>" in page
    assert '<section id="transitions">' in page and 'id="fig-transition"' in page
    assert HOSTILE not in page  # the top categories carry it
    assert '<section id="rfm">' not in mall_page
    assert '<section id="transitions">' not in mall_page


def test_zscores_match_the_mall_centres(mall: FitResult) -> None:
    z = segment_zscores(mall.customers, mall.features, mall.labels, prepare(mall).names)
    # the high-spend centre (86.5, 82.1) against the population (60.56, 50.2; SD 26.2, 25.8)
    assert z["spending_score"].max() == pytest.approx((82.13 - 50.20) / 25.76, abs=0.02)
    # size-weighted z-scores sum to zero: the segments partition the population
    weighted = z.to_numpy() * np.bincount(mall.labels)[:, None]
    assert np.allclose(weighted.sum(axis=0), 0.0, atol=1e-9)


def test_profiles_and_cards_use_the_fits_own_zscores(refit: FitResult) -> None:
    data = prepare(refit)
    assert data.zscore_space == "model"  # log1p money: the space the names were read in
    for pos, seg in enumerate(refit.model.segments):
        for f in refit.features:
            assert data.zscores.iloc[pos][f] == refit.profiles.loc[seg.id, f"z_{f}"]
    page = build_html(refit, data)
    top = data.zscores.iloc[0].abs().idxmax()
    assert f"{top}: {data.zscores.iloc[0][top]:+.2f} SD" in page
    assert "after the model's transforms" in page


def test_scatter_is_sampled_on_large_data(refit: FitResult) -> None:
    n = 4000
    rows = np.random.default_rng(1).integers(0, len(refit.labels), n)
    big = dataclasses.replace(
        refit,
        customers=refit.customers.iloc[rows].set_axis([f"b{i}" for i in range(n)]),
        X=refit.X[rows],
        labels=refit.labels[rows],
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


@given(st.text())
def test_any_data_string_becomes_inert_text_in_tables_and_charts(text: str) -> None:
    cell = re.fullmatch(
        r"<table><thead><tr><th>c</th></tr></thead><tbody><tr><td>(.*)</td></tr></tbody></table>",
        html_table(pd.DataFrame({"c": [text]})),
        re.S,
    )
    assert cell is not None
    assert "<" not in cell.group(1) and ">" not in cell.group(1)
    assert html.unescape(cell.group(1)) == text
    label = esc(text)  # plotly decodes &lt; &gt; &amp; back for display
    assert "<" not in label and html.unescape(label) == text


def test_optional_parts_missing_are_stated_not_crashed(refit: FitResult) -> None:
    bare = dataclasses.replace(
        refit,
        silhouette_sample_size=10_000,
        comparison=refit.comparison.iloc[0:0],
        cleaning=[],
        knee_k=None,
        linkage=None,
        k_distance=None,
        transition=None,
    )
    page = build_html(bare)
    assert "computed on a random sample of 10,000 customers" in page
    assert "No comparison available." in page
    assert "No cleaning rule was applied." in page
    assert "No clear knee was found" in page
    assert '<section id="structure">' not in page and '<section id="transitions">' not in page
