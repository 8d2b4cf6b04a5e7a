"""Rank models from their graded items: one row per model, one column per skill.

A model's score is the weight-averaged score of its *scored* items (0..1); unscored items
are counted apart, never as zeros. A merge is compared with the best of its parents.
"""

from __future__ import annotations

import pandas as pd


def _weighted_mean(group: pd.DataFrame) -> float:
    scored = group.dropna(subset=["score"])
    if scored.empty:
        return float("nan")
    return float((scored["score"] * scored["weight"]).sum() / scored["weight"].sum())


def rank(results: pd.DataFrame, candidates) -> pd.DataFrame:
    """`results`: one row per model × item with model, skill, weight, score (NaN = unscored)."""
    info = {c.name: c for c in candidates}
    skills = sorted(results["skill"].unique())
    rows = []
    for model, group in results.groupby("model", sort=False):
        row = {"model": model, "score": _weighted_mean(group)}
        for skill in skills:
            row[skill] = _weighted_mean(group[group["skill"] == skill])
        row["n_scored"] = int(group["score"].notna().sum())
        row["n_unscored"] = int(group["score"].isna().sum())
        c = info[model]
        row.update(kind=c.kind, method=c.method or "", parents=" + ".join(c.parents))
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.sort_values(["score", "model"], ascending=[False, True], na_position="last")
    table.insert(1, "rank", table["score"].rank(ascending=False, method="min").astype("Int64"))
    scores = dict(zip(table["model"], table["score"]))
    best_parent, delta = [], []
    for model in table["model"]:
        parents = [p for p in info[model].parents if p in scores]
        top = max(parents, key=lambda p: scores[p], default=None)
        best_parent.append(top or "")
        delta.append(scores[model] - scores[top] if top else float("nan"))
    table["best_parent"] = best_parent
    table["vs_best_parent"] = delta
    return table.reset_index(drop=True)
