"""Rank models from their graded items: one row per model, one column per skill, with intervals.

A model's score is the weight-averaged score of its *scored* items (0..1); unscored items
are counted apart, never as zeros. A merge is compared with the best of its parents.
The 95 % intervals (score, rank, merge minus parent) come from `stats`' seeded bootstrap.
"""

from __future__ import annotations

import pandas as pd

from mergeval.report import stats
from mergeval.report.stats import Bootstrap

DIFF_COLUMNS = ["merge", "parent", "best_parent", "diff", "ci_low", "ci_high", "verdict",
                "won", "lost", "tied", "n_both"]


def _with_item_ids(results: pd.DataFrame) -> pd.DataFrame:
    if "item_id" in results:
        return results
    # Every model's records come in the plan's item order (stages.result_records), so the
    # position within a model is the item; an explicit item_id column is preferred.
    return results.assign(item_id=results.groupby("model", sort=False).cumcount())


def rank(results: pd.DataFrame, candidates, boot: Bootstrap | None = None) -> pd.DataFrame:
    """`results`: one row per model × item with model, item_id, skill, weight, score (NaN = unscored)."""
    boot = boot or Bootstrap()
    results = _with_item_ids(results)
    info = {c.name: c for c in candidates}
    skills = sorted(results["skill"].unique())
    scores = stats.score_matrix(results)
    by_skill = {s: stats.score_matrix(results[results["skill"] == s]) for s in skills}
    rows = []
    for model, group in results.groupby("model", sort=False):
        row = {"model": model, "score": float(stats.point(scores.row(model), scores.weights)[0])}
        for skill in skills:
            m = by_skill[skill]
            row[skill] = float(stats.point(m.row(model), m.weights)[0]) if model in m.models else float("nan")
        row["n_scored"] = int(group["score"].notna().sum())
        row["n_unscored"] = int(group["score"].isna().sum())
        c = info[model]
        row.update(kind=c.kind, method=c.method or "", parents=" + ".join(c.parents))
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.sort_values(["score", "model"], ascending=[False, True], na_position="last")
    table.insert(1, "rank", table["score"].rank(ascending=False, method="min").astype("Int64"))
    point = dict(zip(table["model"], table["score"]))
    best_parent, delta = [], []
    for model in table["model"]:
        top = best_parent_of(info[model].parents, point)
        best_parent.append(top or "")
        delta.append(point[model] - point[top] if top else float("nan"))
    table["best_parent"] = best_parent
    table["vs_best_parent"] = delta
    ci = stats.intervals(scores, boot).set_index("model")
    for col in ("ci_low", "ci_high", "rank_low", "rank_high"):
        table[col] = table["model"].map(ci[col]).astype(ci[col].dtype)
    return table.reset_index(drop=True)


def best_parent_of(parents, scores: dict[str, float]) -> str | None:
    """The parent with the highest score (ties: the first named); None if none was ranked."""
    ranked = [p for p in parents if p in scores and not pd.isna(scores[p])]
    return max(ranked, key=lambda p: scores[p], default=None)


def parent_comparisons(results: pd.DataFrame, candidates, boot: Bootstrap | None = None) -> pd.DataFrame:
    """One row per (merge, parent) that were both graded: merge minus parent, paired by item."""
    boot = boot or Bootstrap()
    results = _with_item_ids(results)
    scores = stats.score_matrix(results)
    point = dict(zip(scores.models, stats.point(scores.values, scores.weights)))
    rows = []
    for c in candidates:
        if c.kind != "merge" or c.name not in point:
            continue
        best = best_parent_of(c.parents, point)
        for parent in dict.fromkeys(c.parents):
            if parent not in point:
                continue
            d = stats.paired(scores, c.name, parent, boot)
            rows.append({"merge": c.name, "parent": parent, "best_parent": parent == best, **d,
                         "verdict": stats.verdict(d["ci_low"], d["ci_high"])})
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def best_rows(comparisons: pd.DataFrame) -> pd.DataFrame:
    """Each merge against its best parent (the comparison the ranking headlines), by merge."""
    return comparisons[comparisons["best_parent"].astype(bool)].set_index("merge")


def skill_intervals(results: pd.DataFrame, boot: Bootstrap | None = None) -> pd.DataFrame:
    """model, skill, score, ci_low, ci_high: the bootstrap within each skill's items."""
    boot = boot or Bootstrap()
    results = _with_item_ids(results)
    frames = []
    for skill, group in results.groupby("skill", sort=True):
        ci = stats.intervals(stats.score_matrix(group), boot)
        frames.append(ci[["model", "score", "ci_low", "ci_high"]].assign(skill=skill))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "score", "ci_low", "ci_high", "skill"])
