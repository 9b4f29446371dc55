"""HTML fragments of the offline report: tables and segment cards, every data string escaped.

>>> fmt(0.55393), fmt(248.61), fmt(1234567), fmt(None), fmt(float("nan"))
('0.554', '248.6', '1,234,567', '–', '–')
>>> html_table(pd.DataFrame({"name": ["<b>x</b>"], "n": [3]}))
'<table><thead><tr><th>name</th><th>n</th></tr></thead><tbody><tr><td>&lt;b&gt;x&lt;/b&gt;</td><td class="num">3</td></tr></tbody></table>'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
import pandas as pd

from offline.charts import segment_color
from offline.result import CleaningStep
from state.model import Segment

RFM_COLUMNS = ("rfm_r", "rfm_f", "rfm_m")
KEY_DIFFERENCES = 3


def fmt(value: object) -> str:
    """A number for people: thousands separators, 3 significant decimals, '–' when missing."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v == int(v) and abs(v) >= 1000:
            return f"{int(v):,}"
        if abs(v) >= 100:
            return f"{v:,.1f}"
        return f"{v:.3g}"
    return str(value)


def pct(value: float | None) -> str:
    """A share as a percentage with one decimal, '–' when unknown.

    >>> pct(0.98), pct(None)
    ('98.0%', '–')
    """
    if value is None or not math.isfinite(float(value)):
        return "–"
    return f"{float(value):.1%}"


def html_table(
    frame: pd.DataFrame, *, row_classes: Sequence[str] | None = None, index: bool = False
) -> str:
    """A plain HTML table; numbers right-aligned, every cell escaped."""
    df = frame.reset_index() if index else frame
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cls = f' class="{escape(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{escape(fmt(v))}</td>'
            if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            else f"<td>{escape(fmt(v))}</td>"
            for v in row
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def cleaning_table(steps: Sequence[CleaningStep]) -> str:
    """The data-quality table: one row per cleaning rule with its count of affected rows."""
    if not steps:
        return '<p class="note">No cleaning rule was applied.</p>'
    frame = pd.DataFrame(
        {
            "rule": [s.rule for s in steps],
            "column": [s.column for s in steps],
            "rows affected": [int(s.rows_affected) for s in steps],
            "action": [s.action for s in steps],
        }
    )
    return html_table(frame)


def comparison_table(comparison: pd.DataFrame) -> str:
    """The algorithm comparison, the chosen row highlighted."""
    if comparison.empty:
        return '<p class="note">No comparison available.</p>'
    chosen = comparison.get("chosen", pd.Series(False, index=comparison.index)).fillna(False)
    frame = comparison.drop(columns=[c for c in ("chosen",) if c in comparison])
    frame = frame.dropna(axis=1, how="all").copy()
    frame.insert(0, "chosen", ["✓" if bool(c) else "" for c in chosen])
    return html_table(frame, row_classes=["chosen" if bool(c) else "" for c in chosen])


def tree_rules_table(segments: Sequence[Segment], rules: Mapping[int, str]) -> str:
    """Segment name -> the surrogate tree's rule for it."""
    frame = pd.DataFrame(
        {
            "segment": [s.name for s in segments],
            "rule": [rules.get(s.id, "(no rule)") for s in segments],
        }
    )
    return html_table(frame)


def key_differences(z: pd.Series, means: pd.Series, population: pd.Series) -> list[str]:
    """The features where a segment differs most from the population, in words.

    >>> key_differences(pd.Series({"income": 1.5, "age": -0.2}),
    ...                 pd.Series({"income": 86.5, "age": 35.0}), pd.Series({"income": 60.6, "age": 38.9}))
    ['income: +1.50 SD (86.5 vs 60.6 overall)', 'age: -0.20 SD (35 vs 38.9 overall)']
    """
    top = z.dropna().abs().sort_values(ascending=False).index[:KEY_DIFFERENCES]
    return [
        f"{f}: {z[f]:+.2f} SD ({fmt(float(means[f]))} vs {fmt(float(population[f]))} overall)"
        for f in top
    ]


def segment_cards(
    segments: Sequence[Segment],
    labels: np.ndarray,
    zscores: pd.DataFrame,
    customers: pd.DataFrame,
    features: Sequence[str],
    rules: Mapping[int, str],
    top_categories: Mapping[int, str] | None = None,
) -> str:
    """One card per segment: name, size and share, description, action, differences, rule.

    ``labels`` are positions in ``segments``, aligned with the rows of ``customers``;
    ``top_categories`` (segment id -> text) is shown when known.
    """
    data = customers[list(features)].apply(pd.to_numeric, errors="coerce")
    population = data.mean()
    labels = np.asarray(labels)
    means_by_pos = data.groupby(labels).mean()
    total = max(len(labels), 1)
    cards = []
    for pos, seg in enumerate(segments):
        size = int((labels == pos).sum())
        z = zscores.iloc[pos] if pos < len(zscores) else pd.Series(dtype=float)
        means = means_by_pos.loc[pos] if pos in means_by_pos.index else population
        diffs = "".join(f"<li>{escape(d)}</li>" for d in key_differences(z, means, population))
        cats = (top_categories or {}).get(seg.id)
        cats_html = f"<p><b>Top categories:</b> {escape(str(cats))}</p>" if cats else ""
        cards.append(
            f'<div class="card" id="segment-{int(seg.id)}" style="--seg-color: {segment_color(pos)}">'
            f"<h3>{escape(seg.name)}</h3>"
            f'<p class="size">segment {int(seg.id)} · {size:,} customers · {size / total:.1%}</p>'
            f"<p>{escape(seg.description or '')}</p>"
            f"<p><b>Suggested action:</b> {escape(seg.action or '–')}</p>"
            f"<b>Key differences</b><ul>{diffs}</ul>{cats_html}"
            f'<b>Tree rule</b><p class="rule">{escape(rules.get(seg.id, "(no rule)"))}</p>'
            "</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def rfm_section(customers: pd.DataFrame, names: Sequence[str], labels: np.ndarray) -> str:
    """RFM segment counts and mean scores, and a cross-tab with the cluster segments.

    Empty string when the customers carry no RFM columns.
    """
    if "rfm_segment" not in customers:
        return ""
    rfm = customers["rfm_segment"].astype(str)
    cols = [c for c in RFM_COLUMNS if c in customers]
    summary = customers.groupby(rfm)[cols].mean() if cols else pd.DataFrame(index=rfm.unique())
    summary.insert(0, "customers", rfm.value_counts().reindex(summary.index).astype(int))
    summary.insert(1, "share (%)", (summary["customers"] / len(rfm) * 100).round(1))
    summary = summary.sort_values("customers", ascending=False)
    summary.index.name = "RFM segment"
    segment = pd.Series(np.asarray(names, dtype=object)[np.asarray(labels)], index=customers.index)
    cross = pd.crosstab(segment.rename("cluster segment"), rfm.rename("RFM segment"))
    cross = cross.reindex([n for n in names if n in cross.index])  # model order
    return (
        '<p class="note">Classic RFM quintile scores (1-5, mean per RFM segment) next to '
        "the cluster segments.</p>"
        + html_table(summary, index=True)
        + "<h3>Cluster segment x RFM segment "
        "(customers)</h3>" + html_table(cross, index=True)
    )
