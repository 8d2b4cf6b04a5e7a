"""Write the run folder: run.json, results.jsonl, ranking.csv and report.md.

The folder is assembled under a temporary name and renamed into place, so reports/ never
holds a half-written run.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from . import store
from .hashing import file_hash

FORMAT_VERSION = 1
PACKAGES = ("mergeval", "mergekit", "transformers", "torch", "prefect", "pandas")


def run_name(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}_{uuid.uuid4().hex[:6]}"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "not installed"
    return out


def input_hashes(plan) -> dict:
    return {
        "recipes": {r.name: file_hash(r.path) for r in plan.recipes},
        "items": {it.id: it.hash for it in plan.items},
        "judge": {"settings": file_hash(plan.judge_file), "fingerprint": plan.judge_fingerprint},
    }


def write_run(plan, records: list[dict], ranking: pd.DataFrame, stages: dict, failures: list[dict],
              settings: dict, started: datetime, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(started)
    tmp = reports_dir / f".tmp-{name}"
    tmp.mkdir()
    run = {
        "format_version": FORMAT_VERSION,
        "run": name,
        "started": started.isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(),
        "settings": settings,
        "packages": package_versions(),
        "hashes": input_hashes(plan),
        "stages": stages,
        "failures": failures,
        "models": [
            {"name": c.name, "kind": c.kind, "model_id": c.model_id, "path": str(c.path),
             "parents": list(c.parents), "method": c.method}
            for c in plan.candidates
        ],
    }
    store.write_json(tmp / "run.json", run)
    store.write_atomic(tmp / "results.jsonl", "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
    store.write_atomic(tmp / "ranking.csv", ranking.to_csv(index=False, float_format="%.4f"))
    store.write_atomic(tmp / "report.md", render_markdown(plan, ranking, failures, run))
    final = reports_dir / name
    os.replace(tmp, final)
    return final


def _fmt(x) -> str:
    if isinstance(x, float):
        return "–" if pd.isna(x) else f"{x:.3f}"
    return str(x)


def markdown_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def render_markdown(plan, ranking: pd.DataFrame, failures: list[dict], run: dict) -> str:
    skills = sorted({it.skill for it in plan.items})
    cols = ["rank", "model", "score", *skills, "vs_best_parent", "best_parent", "n_scored", "n_unscored", "method"]
    lines = [f"# mergeval sweep {run['run']}", ""]
    merges = ranking[ranking["kind"] == "merge"].dropna(subset=["score"])
    if not merges.empty:
        best = merges.iloc[0]
        beat = ranking[(ranking["kind"] == "merge") & (ranking["vs_best_parent"] > 0)]["model"].tolist()
        lines += [
            f"**Best merge: `{best['model']}`** ({best['method']}), score {best['score']:.3f}, "
            f"{best['vs_best_parent']:+.3f} against its best parent `{best['best_parent']}`.",
            "",
            f"Merges that beat all their parents: {', '.join(f'`{m}`' for m in beat) or 'none'}.",
            "",
        ]
    lines += [
        f"{len(plan.items)} items ({', '.join(skills)}) from `{plan.items_dir}`; judge `{plan.judge.model}` "
        f"({plan.judge.backend}); score = mean normalized item score (0..1), unscored items counted apart.",
        "",
        "## Ranking",
        "",
        markdown_table(ranking[[c for c in cols if c in ranking.columns]]),
        "",
    ]
    lines += ["## Stages", "",
              "| stage | tasks executed | tasks cached | failed | items executed | items cached | seconds |",
              "|---|---|---|---|---|---|---|"]
    for stage, s in run["stages"].items():
        lines.append(f"| {stage} | {s['executed']} | {s['cached']} | {s['failed']} | {s['items_executed']} "
                     f"| {s['items_cached']} | {s['seconds']:.1f} |")
    lines.append("")
    if failures:
        lines += ["## What failed", ""]
        lines += [f"- `{f['model']}` at {f['stage']}: {f['error']}" for f in failures]
        lines.append("")
    if not merges.empty:
        recipe = plan.candidate(merges.iloc[0]["model"]).recipe
        lines += ["## The winner's recipe", "", f"`{recipe.path.name}`:", "", "```yaml", recipe.text.rstrip(), "```", ""]
    return "\n".join(lines)
