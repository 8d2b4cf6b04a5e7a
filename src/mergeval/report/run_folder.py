"""Write the run folder: run.json, results.jsonl, ranking.csv, comparisons.csv, report.md and
report.html, then a model card (README.md) into every merge still on disk.

The folder is assembled under a temporary name and renamed into place, so reports/ never
holds a half-written run. The cards are written after that rename: they name a finished run.

What may leave the machine: SHARED_FILES and the model cards never hold an item's question,
criterion, reference, id or canary (tests/test_sweep.py checks a real run). report.html,
results.jsonl and run.json (item ids, paths, settings) are for the user's eyes only.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import pandas as pd

from mergeval import results
from mergeval.core import store
from mergeval.core.hashing import file_hash
from mergeval.inputs import model_dirs, remote_code
from mergeval.report import html_page, markdown, model_cards, rank
from mergeval.report.stats import Bootstrap

FORMAT_VERSION = 2  # 2: statistics, suite_hash, model sizes in run.json; comparisons.csv; report.html
SHARED_FILES = ("report.md", "ranking.csv", "comparisons.csv")  # plus the model cards: no item text in them
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


def _model_entry(c) -> dict:
    on_disk = Path(c.path).is_dir() and (Path(c.path) / "config.json").exists()
    return {"name": c.name, "kind": c.kind, "model_id": c.model_id, "path": str(c.path),
            "parents": list(c.parents), "method": c.method, "on_disk": on_disk,
            "weights_bytes": model_dirs.weights_size(Path(c.path)) if on_disk else None}


def chat_folds(records: list[dict]) -> list[dict]:
    """run.json's `chat_folds`: per model whose chat template refused items' messages, how they
    were folded to fit, why, and for how many items."""
    seen: dict[tuple, int] = {}
    for r in records:
        if r.get("chat_fold"):
            key = (r["model"], r["chat_fold"]["how"], r["chat_fold"]["why"])
            seen[key] = seen.get(key, 0) + 1
    return [{"model": m, "how": how, "why": why, "items": n} for (m, how, why), n in seen.items()]


def write_run(plan, records: list[dict], ranking: pd.DataFrame, stages: dict, failures: list[dict],
              settings: dict, started: datetime, reports_dir: Path, boot: Bootstrap | None = None,
              extras: dict[str, str] | None = None, run_extra: dict | None = None) -> Path:
    """`extras`: more files (name → text) written into the folder before it is renamed into
    place; `run_extra`: more run.json keys (a search's trials, its study)."""
    boot = boot or Bootstrap()
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
        "statistics": boot.describe(),
        "models": [_model_entry(c) for c in plan.candidates],
        **(run_extra or {}),
    }
    if remote_code.run_entry(plan):  # absent when no model ran its own code
        run["remote_code"] = remote_code.run_entry(plan)
    run["suite_hash"] = results.suite_hash(run)
    if chat_folds(records):  # absent when every model took the items' messages as they are
        run["chat_folds"] = chat_folds(records)
    frame = results.frame(records, run)
    comparisons = rank.parent_comparisons(frame, plan.candidates, boot) if records else \
        pd.DataFrame(columns=rank.DIFF_COLUMNS)
    skill_ci = rank.skill_intervals(frame, boot) if records else None
    store.write_json(tmp / "run.json", run)
    store.write_atomic(tmp / "results.jsonl", "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records))
    store.write_atomic(tmp / "ranking.csv", ranking.to_csv(index=False, float_format="%.4f"))
    store.write_atomic(tmp / "comparisons.csv", comparisons.to_csv(index=False, float_format="%.4f"))
    store.write_atomic(tmp / "report.md", markdown.render_markdown(plan, ranking, comparisons, failures, run))
    store.write_atomic(tmp / "report.html", html_page.render(
        plan, run, ranking, comparisons, skill_ci, frame, markdown.summary(ranking, comparisons, len(plan.items))))
    for file_name, text in (extras or {}).items():
        store.write_atomic(tmp / file_name, text)
    final = reports_dir / name
    os.replace(tmp, final)
    model_cards.write_cards(plan, run, ranking, comparisons, skill_ci)
    return final
