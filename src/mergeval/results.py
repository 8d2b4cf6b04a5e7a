"""A run's results as a pandas DataFrame: one row per model × item.

    from mergeval import results
    frame = results.load("reports/20261125T154724Z_89f98f")   # or a results.parquet export
    frame.groupby("model")["score"].mean()

The frame is flat on purpose: nested fields (checks, judge_scores, judge_replies) are JSON text,
so the frame survives Parquet and CSV unchanged; `json.loads` them when needed. `checks_passed`
and `checks_total` are there for the common question without parsing. `score` is NaN where the
item is unscored (see `unscored_reason`): a judge failure is never a zero. `chat_fold` says,
where the model's chat template refused the item's messages, how they were folded to fit.
A conversation's row adds `transcript` (JSON text: every turn's turn, role, content and who
wrote it) and, graded per turn, `turn_scores` (JSON text) and `weakest_turn`; other rows have
them empty, and a run without conversations has no such columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mergeval.core import store
from mergeval.core.hashing import content_hash

NESTED = ("checks", "judge_scores", "judge_replies")
CONVERSATION_NESTED = ("transcript", "turn_scores")  # JSON text where the row has it, else empty
FIRST = ["run", "model", "model_id", "kind", "item_id", "item_hash", "skill", "weight", "score",
         "unscored_reason", "answer", "checks_passed", "checks_total", "judge_score", "judge_spread",
         "judge_weighted", "unstable", "checks", "judge_scores", "judge_replies", "judge_prompt", "chat_fold"]
FLOATS = ("weight", "score", "judge_score", "judge_spread", "judge_weighted")
STRINGS = ("run", "model", "model_id", "kind", "item_id", "item_hash", "skill", "unscored_reason",
           "answer", "checks", "judge_scores", "judge_replies", "judge_prompt", "chat_fold")


def read_run(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))


def suite_hash(run: dict) -> str:
    """The item suite's identity: the items' content hashes, whatever their file names."""
    return content_hash(sorted(run["hashes"]["items"].values()))


def judge_hash(run: dict) -> str:
    """Proctora's identity: its fingerprint hashes everything that changes a grade."""
    return run["hashes"]["judge"]["fingerprint"]


def frame(records: list[dict], run: dict | None = None) -> pd.DataFrame:
    """results.jsonl records (plus run.json, for the run name and model ids) as the flat frame."""
    ids = {m["name"]: m["model_id"] for m in (run or {}).get("models", [])}
    rows = []
    for r in records:
        row = dict(r)
        checks = r.get("checks") or []
        row["checks_passed"] = sum(bool(c.get("passed")) for c in checks) if checks else None
        row["checks_total"] = len(checks) if checks else None
        for key in NESTED:
            row[key] = json.dumps(r.get(key, []), ensure_ascii=False, sort_keys=True)
        for key in CONVERSATION_NESTED:
            if key in r:
                row[key] = json.dumps(r[key], ensure_ascii=False, sort_keys=True)
        fold = r.get("chat_fold")  # how the chat template's refusal was folded around, or None
        row["chat_fold"] = f"{fold['how']} ({fold['why']})" if fold else None
        row["run"] = (run or {}).get("run")
        row["model_id"] = ids.get(r["model"])
        rows.append(row)
    out = pd.DataFrame(rows)
    out = out.reindex(columns=FIRST + sorted(c for c in out.columns if c not in FIRST))
    for col in FLOATS:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    for col in ("checks_passed", "checks_total"):
        out[col] = out[col].astype("Int64")
    out["unstable"] = out["unstable"].fillna(False).astype(bool)
    for col in STRINGS + tuple(c for c in CONVERSATION_NESTED if c in out.columns):
        out[col] = out[col].astype("string")  # one explicit dtype, so Parquet gives it back as is
    if "weakest_turn" in out.columns:
        out["weakest_turn"] = pd.to_numeric(out["weakest_turn"], errors="coerce").astype("Int64")
    return out


def load(path: str | Path) -> pd.DataFrame:
    """A run folder (run.json + results.jsonl), or a Parquet file written by `export`."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return pd.read_parquet(path)
    records = list(store.read_jsonl(path / "results.jsonl"))
    if not records and not (path / "results.jsonl").exists():
        raise FileNotFoundError(f"{path} is not a run folder (no results.jsonl)")
    return frame(records, read_run(path))


def export(run_dir: str | Path, out: Path | None = None, fmt: str = "parquet") -> Path:
    """Write the run's frame as Parquet (or CSV); returns the file written."""
    data = load(run_dir)
    out = Path(out) if out else Path(run_dir) / f"results.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "parquet":
        data.to_parquet(tmp, index=False)  # pyarrow
    else:
        data.to_csv(tmp, index=False)
    tmp.replace(out)
    return out
