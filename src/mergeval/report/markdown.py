"""report.md: the ranked table, the story in a few sentences, the stages, and the number formats
that report.html and the Prefect UI share with it. Nothing here holds an item's text."""

from __future__ import annotations

import pandas as pd

from mergeval.inputs import remote_code
from mergeval.report import rank


def _fmt(x) -> str:
    if isinstance(x, float):
        return "–" if pd.isna(x) else f"{x:.3f}"
    return "–" if x is pd.NA else str(x)


def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def interval(low, high, signed: bool = False) -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(low)} to {f.format(high)}"


def rank_range(low, high) -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    low, high = int(low), int(high)  # a CSV read back may hold them as floats
    return str(low) if low == high else f"{low}–{high}"


def ranked_table(ranking: pd.DataFrame, comparisons: pd.DataFrame, skills: list[str]) -> pd.DataFrame:
    """The ranking as people read it: intervals beside the numbers they qualify."""
    best = rank.best_rows(comparisons)
    rows = []
    for r in ranking.to_dict("records"):
        vs = best.loc[r["model"]] if r["model"] in best.index else None
        rows.append({
            "rank": r["rank"], "rank range": rank_range(r.get("rank_low"), r.get("rank_high")), "model": r["model"],
            "score": r["score"], "95 % interval": interval(r.get("ci_low"), r.get("ci_high")),
            **{s: r.get(s, float("nan")) for s in skills},
            "vs best parent": f"{vs['diff']:+.3f}" if vs is not None else "–",
            "its 95 % interval": interval(vs["ci_low"], vs["ci_high"], signed=True) if vs is not None else "–",
            "best parent": r.get("best_parent") or "–", "n_scored": r.get("n_scored"),
            "n_unscored": r.get("n_unscored"), "method": r.get("method") or "–",
        })
    return pd.DataFrame(rows)


def _names(models: list[str]) -> str:
    return ", ".join(f"`{m}`" for m in models)


def summary(ranking: pd.DataFrame, comparisons: pd.DataFrame, n_items: int) -> list[str]:
    """The story in a few sentences (markdown). Overlapping intervals are never called a win."""
    scored = ranking.dropna(subset=["score"])
    if scored.empty:
        return ["No model was fully graded: there is nothing to rank."]
    lead = scored.iloc[0]
    lines = [f"`{lead['model']}` scores highest: {lead['score']:.3f} (95 % interval "
             f"{interval(lead['ci_low'], lead['ci_high'])}) on {n_items} items."]
    overlap = scored[(scored["model"] != lead["model"]) & (scored["ci_high"] >= lead["ci_low"])]["model"].tolist()
    if overlap:
        shown = _names(overlap[:8]) + (f" and {len(overlap) - 8} more" if len(overlap) > 8 else "")
        lines.append(f"Its interval overlaps those of {shown}: on this suite they cannot be told apart, "
                     "so read the top of the table as a group, not a podium.")
    elif len(scored) > 1:
        lines.append("No other model's interval reaches it: it is ahead of every other model on this suite.")
    merges = scored[scored["kind"] == "merge"]
    if lead["kind"] != "merge" and not merges.empty:
        top = merges.iloc[0]
        lines.append(f"The best merge, `{top['model']}` ({top['method']}), is ranked {top['rank']} with "
                     f"{top['score']:.3f} ({interval(top['ci_low'], top['ci_high'])}).")
    best = rank.best_rows(comparisons)
    for verdict, words in (("better", "Clearly better than their best parent"),
                           ("worse", "Clearly worse than their best parent")):
        merges = best[best["verdict"] == verdict]
        if not merges.empty:
            detail = "; ".join(f"`{m}` {r['diff']:+.3f} ({interval(r['ci_low'], r['ci_high'], True)}; won {r['won']}, "
                               f"lost {r['lost']}, tied {r['tied']} items)" for m, r in merges.iterrows())
            lines.append(f"{words} (paired 95 % interval entirely {'above' if verdict == 'better' else 'below'} 0): "
                         f"{detail}.")
    unclear = best[best["verdict"] == "no clear difference"].index.tolist()
    if unclear:
        lines.append(f"No clear difference from their best parent (the paired interval includes 0): {_names(unclear)}.")
    unscored, grades = int(ranking["n_unscored"].sum()), int(ranking["n_scored"].sum() + ranking["n_unscored"].sum())
    lines.append(f"{unscored} of {grades} grades are unscored (the judge failed): they are left out of "
                 "the means and the bootstrap, never counted as zeros." if unscored else
                 f"All {grades} grades are scored (no judge failures).")
    return lines


def remote_code_section(plan) -> list[str]:
    """Who ran the Python in their own folder (trust_remote_code); nothing when nobody did."""
    lines = remote_code.report_lines(plan)
    if not lines:
        return []
    return ["## Code from the models' folders", "",
            "These models ran with trust_remote_code on, because the run named them:", "",
            *(f"- {line}" for line in lines), ""]


def chat_fold_section(run: dict) -> list[str]:
    """Which models were asked differently because their chat template refused the items'
    messages (run.json's chat_folds); nothing when none was."""
    folds = run.get("chat_folds") or []
    if not folds:
        return []
    return ["## Chat templates", "",
            "These models' chat templates refused some items' messages as written, so they were asked "
            "in the form their templates accept:", "",
            *(f"- `{f['model']}`: {f['how']} for {f['items']} item(s) (the template says: {f['why']})"
              for f in folds), ""]


def render_markdown(plan, ranking: pd.DataFrame, comparisons: pd.DataFrame, failures: list[dict], run: dict) -> str:
    skills = sorted({it.skill for it in plan.items})
    ranked = "ci_low" in ranking and not ranking.empty
    lines = [f"# mergeval sweep {run['run']}", ""]
    if ranked:
        lines += [*(f"{line}\n" for line in summary(ranking, comparisons, len(plan.items)))]
    st = run["statistics"]
    lines += [
        f"{len(plan.items)} items ({', '.join(skills)}) from `{plan.items_dir}`; judge `{plan.judge.model}` "
        f"({plan.judge.backend}); score = mean normalized item score (0..1).",
        "",
        *remote_code_section(plan),
        *chat_fold_section(run),
        "## Ranking",
        "",
        f"Intervals are {st['level'] * 100:.0f} %, from a bootstrap over items ({st['replicates']} replicates, seed "
        f"{st['seed']}), paired across models; the rank range holds the ranks a model takes in {st['level'] * 100:.0f} % "
        f"of them. Models whose intervals overlap are not clearly apart. {st['unscored']}",
        "",
    ]
    if ranked:
        lines += [markdown_table(ranked_table(ranking, comparisons, skills)), ""]
    lines += ["## Stages", "",
              "| stage | tasks executed | tasks cached | failed | items executed | items cached | seconds |",
              "|---|---|---|---|---|---|---|"]
    for stage, s in run["stages"].items():
        lines.append(f"| {stage} | {s.get('executed', 0)} | {s.get('cached', 0)} | {s.get('failed', 0)} | "
                     f"{s.get('items_executed', 0)} | {s.get('items_cached', 0)} | {s.get('seconds', 0.0):.1f} |")
    lines.append("")
    rebuilt = run["stages"].get("build", {}).get("rebuilt", 0)
    if rebuilt:
        lines += [f"{rebuilt} merge(s) were built again: their weights had been pruned (`--keep`) after an "
                  "earlier run, and items they had not answered (new or edited) needed them.", ""]
    if failures:
        lines += ["## What failed", ""]
        lines += [f"- `{f['model']}` at {f['stage']}: {f['error']}" for f in failures]
        lines.append("")
    merges = ranking[ranking["kind"] == "merge"].dropna(subset=["score"]) if "kind" in ranking else ranking.iloc[0:0]
    if not merges.empty:
        recipe = plan.candidate(merges.iloc[0]["model"]).recipe
        lines += ["## The winner's recipe", "", f"`{recipe.path.name}`:", "", "```yaml", recipe.text.rstrip(), "```", ""]
    return "\n".join(lines)
