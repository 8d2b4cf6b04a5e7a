"""Model cards: a README.md in every merged model kept on disk, written after each run.

A card says what the model is (its recipe), how well it did (scores with 95 % intervals, paired
comparisons with its parents) and on what (the suite's hash, the judge's fingerprint). It never
holds an item's question, criterion, reference or id: the suite stays private, and its hash is
enough to tell whether two cards were graded on the same exam.

Source models are the user's own folders: no card is ever written into them. mergekit's own
README (written at build time) is replaced; the recipe it showed is in the card.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mergeval.core import store
from mergeval.inputs.tokenizer_options import tokenizer_effect


def _num(x, signed: bool = False) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(low, high, signed: bool = False) -> str:
    return "–" if pd.isna(low) or pd.isna(high) else f"{_num(low, signed)} to {_num(high, signed)}"


def card(cand, row: dict, comparisons: pd.DataFrame, skill_ci: pd.DataFrame | None, run: dict,
         n_models: int) -> str:
    stats = run["statistics"]
    judge = run["settings"].get("judge_settings", {})
    lines = [
        "---", "library_name: transformers", "tags:", "- merge", "- mergekit", "- mergeval", "---", "",
        f"# {cand.name}", "",
        f"{what_it_is(cand)}, built with mergekit and graded "
        f"by mergeval on a private item suite. This card was written by run `{run['run']}`.", "",
        "## Scores", "",
        f"Rank {row['rank']} of {n_models} (in {stats['level'] * 100:.0f} % of bootstrap replicates it ranks "
        f"{row['rank_low']}–{row['rank_high']}). Scores are mean item scores in 0..1 with {stats['level'] * 100:.0f} % "
        "intervals.", "",
        "| | score | 95 % interval |", "|---|---|---|",
        f"| overall | {_num(row['score'])} | {_ci(row['ci_low'], row['ci_high'])} |",
    ]
    if skill_ci is not None:
        for r in skill_ci[skill_ci["model"] == cand.name].sort_values("skill").to_dict("records"):
            lines.append(f"| skill `{r['skill']}` | {_num(r['score'])} | {_ci(r['ci_low'], r['ci_high'])} |")
    lines += ["", f"{row['n_scored']} items scored, {row['n_unscored']} unscored (judge failures, left out; never "
              "counted as zeros).", ""]
    mine = comparisons[comparisons["merge"] == cand.name]
    if not mine.empty:
        lines += ["## Against its parents", "", "Paired over the items both were scored on.", "",
                  "| parent | difference | 95 % interval | won / lost / tied | verdict |", "|---|---|---|---|---|"]
        for r in mine.to_dict("records"):
            best = " (best parent)" if r["best_parent"] else ""
            lines.append(f"| `{r['parent']}`{best} | {_num(r['diff'], True)} | {_ci(r['ci_low'], r['ci_high'], True)} "
                         f"| {r['won']} / {r['lost']} / {r['tied']} | {r['verdict']} |")
        lines.append("")
    lines += ["## Tokenizer", "", *[f"- {t}" for t in tokenizer_effect(cand.recipe)], ""]
    lines += ["## Recipe", "", f"`{cand.recipe.path.name}`:", "", "```yaml", cand.recipe.text.rstrip(), "```", "",
              "## How it was graded", "",
              f"- item suite hash: `{run['suite_hash']}` ({len(run['hashes']['items'])} items; the items stay private)",
              f"- judge fingerprint: `{run['hashes']['judge']['fingerprint']}` "
              f"({judge.get('backend', '?')} backend, scale {judge.get('scale', '?')}, {judge.get('samples', '?')} sample(s))",
              f"- model id: `{cand.model_id}`",
              f"- intervals: {stats['method']}, {stats['replicates']} replicates, seed {stats['seed']}",
              f"- mergeval {run['packages'].get('mergeval', '?')}, mergekit {run['packages'].get('mergekit', '?')}", ""]
    return "\n".join(lines)


def what_it_is(cand) -> str:
    """The card's first words: a plain merge, a frankenMoE (base + experts) or a multi-stage merge."""
    parents = ", ".join(f"`{p}`" for p in cand.parents)
    kind = getattr(cand.recipe, "kind", "plain")
    if kind == "moe":
        base = cand.recipe.base_model.name
        experts = [p for p in cand.parents if p != base] or [base]
        return (f"A mixture of experts (mergekit-moe, gate mode `{cand.recipe.config.get('gate_mode', 'hidden')}`) "
                f"with the attention and embeddings of `{base}` and the MLPs of {', '.join(f'`{e}`' for e in experts)}"
                " as experts")
    if kind == "multi-stage":
        return (f"A multi-stage merge ({len(cand.recipe.stages)} stages: `{cand.method}`) of {parents}, "
                "each stage merged by mergekit in turn")
    return f"A `{cand.method}` merge of {parents}"


def write_cards(plan, run: dict, ranking: pd.DataFrame, comparisons: pd.DataFrame,
                skill_ci: pd.DataFrame | None) -> list[Path]:
    """README.md into each ranked merge whose weights are still on disk (pruned ones have none)."""
    rows = {r["model"]: r for r in ranking.to_dict("records")} if "ci_low" in ranking else {}
    written = []
    for cand in plan.candidates:
        if cand.kind != "merge" or cand.name not in rows or not store.is_complete(Path(cand.path)):
            continue
        path = Path(cand.path) / "README.md"
        store.write_atomic(path, card(cand, rows[cand.name], comparisons, skill_ci, run, len(rows)))
        written.append(path)
    return written
