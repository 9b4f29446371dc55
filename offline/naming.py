"""Segments people can use: profiles, names, descriptions, actions, drivers, RFM.

Names come from rules that read each segment's profile: the mean z-score (in model
space, i.e. after log1p for money) of the features playing a role (spend, frequency,
recency, tenure, discount, income, age). Every rule scores every segment; names are
handed out greedily from the highest score, so each is used once per model; a segment
left without a rule gets a name built from its two most distinctive features.

>>> rfm_segment(5, 5), rfm_segment(1, 1), rfm_segment(2, 5), rfm_segment(5, 1)
('Champions', 'Hibernating', "Can't Lose Them", 'New Customers')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.feature_selection import f_classif
from sklearn.tree import DecisionTreeClassifier

ROLES: dict[str, frozenset[str]] = {
    "spend": frozenset(
        {
            "net_spend",
            "gross",
            "spend_rate",
            "spending_score",
            "purchase_amount",
            "avg_order_value",
            "monetary",
            "total_spend",
            "amount",
        }
    ),
    "frequency": frozenset({"orders", "order_rate", "previous_purchases", "frequency", "items"}),
    "recency": frozenset({"recency_days", "recency"}),
    "tenure": frozenset({"tenure_days", "tenure"}),
    "discount": frozenset({"discount_share"}),
    "income": frozenset({"annual_income", "income"}),
    "age": frozenset({"age"}),
}
THRESHOLD = 0.5  # standard deviations from the population mean


def _rule(
    needs: Sequence[str], cond: Callable[[dict[str, float]], bool], score: Callable
) -> tuple[Sequence[str], Callable, Callable]:
    return needs, cond, score


T = THRESHOLD
# name -> (roles needed, condition on role z-scores, score), description, suggested action
NAME_RULES: dict[str, tuple[tuple[Sequence[str], Callable, Callable], str, str]] = {
    "Careful Affluent": (
        _rule(("income", "spend"), lambda z: z["income"] > T and z["spend"] < -T,
              lambda z: z["income"] - z["spend"]),
        "have a high income but spend little",
        "premium products with a clear value story; trust, quality and service over discounts",
    ),
    "Impulse Spenders": (
        _rule(("income", "spend"), lambda z: z["income"] < -T and z["spend"] > T,
              lambda z: z["spend"] - z["income"]),
        "spend a lot relative to their income",
        "trend-led offers, bundles and instalment options; watch price sensitivity",
    ),
    "At-Risk": (
        _rule(("recency",), lambda z: z["recency"] > T and max(z.get("frequency", 0.0),
              z.get("spend", 0.0)) > -0.25, lambda z: z["recency"] + max(z.get("frequency", 0.0),
              z.get("spend", 0.0))),
        "used to buy well but have not been seen for a long time",
        "win-back campaign: personal reminder, a reason to return, ask what went wrong",
    ),
    "Lapsed Customers": (
        _rule(("recency",), lambda z: z["recency"] > T, lambda z: z["recency"]),
        "have not bought for a long time and bought little before",
        "low-cost reactivation e-mails only; do not spend much to win them back",
    ),
    "New Customers": (
        _rule(("tenure",), lambda z: z["tenure"] < -T and z.get("recency", 0.0) <= 0.25,
              lambda z: -z["tenure"]),
        "joined recently",
        "onboarding series and a second-purchase incentive",
    ),
    "Discount Seekers": (
        _rule(("discount",), lambda z: z["discount"] > T, lambda z: z["discount"]),
        "buy mostly on promotion",
        "targeted coupons at the margin they need; avoid training them to wait for sales",
    ),
    "Loyal Customers": (
        _rule(("frequency",), lambda z: z["frequency"] > T and z.get("recency", 0.0) < T,
              lambda z: z["frequency"] - 0.5 * z.get("recency", 0.0)),
        "buy often and keep coming back",
        "loyalty programme, early access and referral rewards",
    ),
    "High-Spenders": (
        _rule(("spend",), lambda z: z["spend"] > T, lambda z: z["spend"]),
        "spend well above the average",
        "VIP treatment, premium ranges and personal service; protect them from churn",
    ),
    "Infrequent Shoppers": (
        _rule(("frequency",), lambda z: z["frequency"] < -T, lambda z: -z["frequency"]),
        "buy rarely",
        "reminders around their typical buying moments; seasonal offers",
    ),
    "Budget Shoppers": (
        _rule(("spend",), lambda z: z["spend"] < -T,
              lambda z: -z["spend"] - 0.5 * z.get("income", 0.0)),
        "spend little",
        "value ranges, bundles and entry-price products",
    ),
    "Young Customers": (
        _rule(("age",), lambda z: z["age"] < -T, lambda z: -0.8 * z["age"]),
        "are younger than the average customer",
        "mobile and social channels, trend products",
    ),
    "Senior Customers": (
        _rule(("age",), lambda z: z["age"] > T, lambda z: 0.8 * z["age"]),
        "are older than the average customer",
        "service, comfort and reliability; classic channels",
    ),
    "Average Customers": (
        _rule((), lambda z: max((abs(v) for v in z.values()), default=0.0) < T,
              lambda z: T - max((abs(v) for v in z.values()), default=0.0)),
        "are close to the population average on every feature",
        "standard communication; test offers to find what moves them",
    ),
}  # fmt: skip


def humanise(feature: str) -> str:
    """``annual_income`` -> ``annual income``."""
    return feature.replace("_", " ")


def role_of(feature: str) -> str | None:
    """The naming role of a feature, or None."""
    return next((r for r, names in ROLES.items() if feature in names), None)


def profile_segments(
    frame: pd.DataFrame,
    features: Sequence[str],
    Xt: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[int],
    category: pd.Series | None = None,
) -> pd.DataFrame:
    """Per segment (index = segment id): size, share, mean_/median_ per feature (raw units),
    z_ per feature (mean in model space minus population mean, in population SDs),
    top_categories (when a category column is given)."""
    n = len(labels)
    mu, sd = Xt.mean(axis=0), Xt.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    rows = []
    for pos, seg_id in enumerate(ids):
        mask = labels == pos
        row: dict[str, object] = {"segment_id": seg_id, "size": int(mask.sum())}
        row["share"] = row["size"] / n if n else 0.0  # type: ignore[operator]
        sub = frame.loc[mask, list(features)]
        for j, f in enumerate(features):
            row[f"mean_{f}"] = float(sub[f].mean()) if mask.any() else np.nan
            row[f"median_{f}"] = float(sub[f].median()) if mask.any() else np.nan
            row[f"z_{f}"] = float((Xt[mask, j].mean() - mu[j]) / sd[j]) if mask.any() else 0.0
        if category is not None:
            top = category[mask].value_counts().head(3)
            row["top_categories"] = ", ".join(
                f"{k} ({v / max(mask.sum(), 1):.0%})" for k, v in top.items()
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("segment_id")


def _role_z(profile: pd.Series, features: Sequence[str]) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for f in features:
        role = role_of(f)
        if role is not None:
            acc.setdefault(role, []).append(float(profile[f"z_{f}"]))
    return {r: float(np.mean(v)) for r, v in acc.items()}


def _describe(profile: pd.Series, features: Sequence[str], top: int = 3) -> str:
    zs = sorted(features, key=lambda f: -abs(float(profile[f"z_{f}"])))[:top]
    parts = [
        f"{humanise(f)} {profile[f'mean_{f}']:.3g} ({float(profile[f'z_{f}']):+.1f} SD)" for f in zs
    ]
    return f"{int(profile['size'])} customers ({profile['share']:.0%}); " + ", ".join(parts)


def name_segments(profiles: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Columns name, description, action, one row per segment (same index), names unique."""
    candidates = []
    zs = {sid: _role_z(profiles.loc[sid], features) for sid in profiles.index}
    for sid, z in zs.items():
        for name, ((needs, cond, score), _, _) in NAME_RULES.items():
            if all(r in z for r in needs) and cond(z):
                candidates.append((float(score(z)), name, sid))
    names: dict[int, str] = {}
    for _, name, sid in sorted(candidates, key=lambda c: -c[0]):
        if sid not in names and name not in names.values():
            names[sid] = name
    out = []
    for sid in profiles.index:
        prof = profiles.loc[sid]
        what = _describe(prof, features)
        if sid in names:
            _, desc, action = NAME_RULES[names[sid]]
            out.append((sid, names[sid], f"Customers who {desc}: {what}.", action))
            continue
        top = sorted(features, key=lambda f: -abs(float(prof[f"z_{f}"])))[:2]
        label = " / ".join(
            f"{'High' if prof[f'z_{f}'] > 0 else 'Low'} {humanise(f).title()}" for f in top
        )
        if label in names.values():
            label = f"{label} ({sid})"
        names[sid] = label
        out.append((sid, label, f"A mixed group: {what}.", "test offers to learn what moves them"))
    return pd.DataFrame(out, columns=["segment_id", "name", "description", "action"]).set_index(
        "segment_id"
    )


def separation(X: np.ndarray, labels: np.ndarray, features: Sequence[str]) -> pd.Series:
    """Per-feature ANOVA F of the segments (higher = the feature separates them more)."""
    if len(np.unique(labels)) < 2:
        return pd.Series(0.0, index=list(features), name="anova_f")
    with np.errstate(divide="ignore", invalid="ignore"):
        f, _ = f_classif(X, labels)
    return pd.Series(np.nan_to_num(f), index=list(features), name="anova_f").sort_values(
        ascending=False
    )


def surrogate_rules(
    frame: pd.DataFrame,
    features: Sequence[str],
    labels: np.ndarray,
    ids: Sequence[int],
    *,
    max_depth: int = 3,
    random_state: int = 42,
) -> tuple[dict[int, str], float]:
    """A shallow decision tree on the raw features: plain-words rule per segment id, agreement."""
    X = frame[list(features)].to_numpy(dtype=float)
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=random_state).fit(X, labels)
    agreement = float((tree.predict(X) == labels).mean())
    t = tree.tree_
    paths: dict[int, list[str]] = {}

    def walk(node: int, bounds: dict[int, list[float]]) -> None:
        if t.children_left[node] == -1:
            cls = int(tree.classes_[int(np.argmax(t.value[node][0]))])
            conds = []
            for j, (lo, hi) in sorted(bounds.items()):
                name = humanise(features[j])
                if lo > -np.inf and hi < np.inf:
                    conds.append(f"{name} between {lo:.3g} and {hi:.3g}")
                elif lo > -np.inf:
                    conds.append(f"{name} > {lo:.3g}")
                else:
                    conds.append(f"{name} <= {hi:.3g}")
            paths.setdefault(cls, []).append(" and ".join(conds) or "everyone")
            return
        j, thr = int(t.feature[node]), float(t.threshold[node])
        lo, hi = bounds.get(j, [-np.inf, np.inf])
        walk(int(t.children_left[node]), {**bounds, j: [lo, min(hi, thr)]})
        walk(int(t.children_right[node]), {**bounds, j: [max(lo, thr), hi]})

    walk(0, {})
    rules = {
        int(seg_id): " or ".join(f"({p})" if len(paths[pos]) > 1 else p for p in paths[pos])
        if pos in paths
        else "no simple rule at this tree depth"
        for pos, seg_id in enumerate(ids)
    }
    return rules, agreement


# Standard RFM segment map on the R and F scores (the widely used 10-segment grid).
RFM_MAP = (
    (r"[1-2][1-2]", "Hibernating"),
    (r"[1-2][3-4]", "At Risk"),
    (r"[1-2]5", "Can't Lose Them"),
    (r"3[1-2]", "About to Sleep"),
    (r"33", "Need Attention"),
    (r"[3-4][4-5]", "Loyal Customers"),
    (r"41", "Promising"),
    (r"51", "New Customers"),
    (r"[4-5][2-3]", "Potential Loyalists"),
    (r"5[4-5]", "Champions"),
)


def rfm_segment(r: int, f: int) -> str:
    """The standard RFM segment of an (R, F) score pair."""
    code = f"{r}{f}"
    return next(name for pattern, name in RFM_MAP if re.fullmatch(pattern, code))


def _quintile(values: pd.Series, ascending: bool = True) -> pd.Series:
    ranks = values.rank(method="first", ascending=ascending)
    n = len(values)
    return np.ceil(ranks * 5 / max(n, 1)).clip(1, 5).astype(int)


def rfm_scores(recency: pd.Series, frequency: pd.Series, monetary: pd.Series) -> pd.DataFrame:
    """Quintile scores 1..5 (5 = most recent / most frequent / highest spend), the code
    ``rfm_score`` (e.g. ``"545"``) and the standard segment label ``rfm_segment``."""
    out = pd.DataFrame(index=recency.index)
    out["rfm_r"] = _quintile(recency, ascending=False)
    out["rfm_f"] = _quintile(frequency)
    out["rfm_m"] = _quintile(monetary)
    out["rfm_score"] = (
        out["rfm_r"].astype(str) + out["rfm_f"].astype(str) + out["rfm_m"].astype(str)
    )
    grid = np.array([[rfm_segment(r, f) for f in range(1, 6)] for r in range(1, 6)], dtype=object)
    out["rfm_segment"] = grid[out["rfm_r"].to_numpy() - 1, out["rfm_f"].to_numpy() - 1]
    return out


def profile_dicts(profiles: pd.DataFrame, features: Sequence[str]) -> Mapping[int, dict]:
    """Compact JSON-ready profile per segment for the model (size, share, means, z-scores)."""
    out = {}
    for sid, p in profiles.iterrows():
        out[int(sid)] = {
            "size": int(p["size"]),
            "share": round(float(p["share"]), 6),
            "mean": {f: round(float(p[f"mean_{f}"]), 6) for f in features},
            "median": {f: round(float(p[f"median_{f}"]), 6) for f in features},
            "z": {f: round(float(p[f"z_{f}"]), 4) for f in features},
        }
    return out
