"""Rank the models of many runs together, but only runs that sat the same exam.

    mergeval leaderboard                       # every run under reports/
    mergeval leaderboard reports/ --like 20261125T154724Z_89f98f

Two runs are comparable only when their item suites hash the same (the items' content, not
their file names) and Proctora's fingerprint is the same (settings, template, model): then every
model answered the same questions and was graded the same way, and the bootstrap can pair items
across runs. The group is the one of the newest run, or of `--like RUN`; every other run is
left out with the reason. A model (by its content id) that appears in several runs is taken
from the newest of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mergeval import results
from mergeval.report import stats
from mergeval.report.stats import Bootstrap


@dataclass(frozen=True)
class Board:
    table: pd.DataFrame  # rank, model, score, ci_low, ci_high, rank_low, rank_high, n_scored, n_unscored, kind, run
    runs: list[str]  # the runs ranked together
    left_out: list[tuple[str, str]]  # (run, why)
    suite_hash: str | None
    judge_hash: str | None


def find_runs(paths: list[Path]) -> tuple[list[tuple[Path, dict]], list[tuple[str, str]]]:
    """Run folders in `paths` (each a run folder or a folder of them), newest name last."""
    found, bad = [], []
    for path in paths:
        folders = [path] if (path / "run.json").exists() else sorted(
            p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            if not (folder / "run.json").exists():
                bad.append((folder.name, "not a run folder (no run.json)"))
                continue
            try:
                run = results.read_run(folder)
                results.suite_hash(run), results.judge_hash(run)  # noqa: B018 (both must be readable)
            except (OSError, ValueError, KeyError, TypeError) as e:
                bad.append((folder.name, f"not a readable run folder ({type(e).__name__}: {e})"))
                continue
            if not (folder / "results.jsonl").exists():
                bad.append((folder.name, "no results.jsonl"))
                continue
            found.append((folder, run))
    found.sort(key=lambda fr: (fr[1].get("run", fr[0].name), str(fr[0])))
    return found, bad


def _why_not(run: dict, ref: dict) -> str | None:
    if results.suite_hash(run) != results.suite_hash(ref):
        return (f"different item suite ({results.suite_hash(run)[:12]}, {len(run['hashes']['items'])} items; "
                f"ranked: {results.suite_hash(ref)[:12]}, {len(ref['hashes']['items'])} items)")
    if results.judge_hash(run) != results.judge_hash(ref):
        return f"different judge settings ({results.judge_hash(run)[:12]}; ranked: {results.judge_hash(ref)[:12]})"
    return None


def build(paths: list[Path], like: str | None = None, boot: Bootstrap | None = None) -> Board:
    runs, left_out = find_runs(paths)
    if not runs:
        return Board(pd.DataFrame(), [], left_out, None, None)
    if like:
        matches = [fr for fr in runs if fr[0].name == like or fr[1].get("run") == like or str(fr[0]) == like]
        if not matches:
            raise ValueError(f"--like {like}: no such run among {len(runs)} run(s)")
        ref = matches[-1][1]
    else:
        ref = runs[-1][1]
    chosen = []
    for folder, run in runs:
        why = _why_not(run, ref)
        if why:
            left_out.append((run.get("run", folder.name), why))
        else:
            chosen.append(folder)
    frame = pd.concat([results.load(f) for f in chosen], ignore_index=True)
    frame["model_id"] = frame["model_id"].fillna(frame["model"])
    # One row set per model: the newest run that graded it (runs are sorted oldest first).
    newest = frame.groupby("model_id")["run"].transform("last")
    frame = frame[frame["run"] == newest]
    return Board(rank_frame(frame, boot or Bootstrap()), [f.name for f in chosen], left_out,
                 results.suite_hash(ref), results.judge_hash(ref))


def rank_frame(frame: pd.DataFrame, boot: Bootstrap) -> pd.DataFrame:
    """Rank one row per model × item (paired by item hash) with bootstrap intervals."""
    clash = frame.groupby("model")["model_id"].transform("nunique") > 1
    frame = frame.assign(model=frame["model"].where(~clash, frame["model_id"]))  # same name, other weights
    scores = stats.score_matrix(frame.astype({"model": object, "item_hash": object}), item="item_hash")
    table = stats.intervals(scores, boot)
    info = frame.groupby("model", sort=False).agg(
        n_scored=("score", "count"), n_unscored=("score", lambda s: int(s.isna().sum())),
        kind=("kind", "first"), run=("run", "first"))
    table = table.join(info, on="model").sort_values(["score", "model"], ascending=[False, True], na_position="last")
    table.insert(0, "rank", table["score"].rank(ascending=False, method="min").astype("Int64"))
    return table.reset_index(drop=True)


def render(board: Board) -> str:
    lines = []
    if board.table.empty:
        lines.append("No run to rank.")
    else:
        shown = board.table.assign(
            interval=[f"{lo:.3f} to {hi:.3f}" if pd.notna(lo) else "–"
                      for lo, hi in zip(board.table["ci_low"], board.table["ci_high"])],
            ranks=[f"{lo}–{hi}" if lo != hi else str(lo) for lo, hi in zip(board.table["rank_low"], board.table["rank_high"])])
        cols = ["rank", "ranks", "model", "score", "interval", "n_scored", "n_unscored", "kind", "run"]
        lines.append(shown[cols].rename(columns={"ranks": "rank range", "interval": "95 % interval"}).to_string(
            index=False, float_format=lambda x: f"{x:.3f}"))
        lines.append(f"\n{len(board.table)} models from {len(board.runs)} run(s); item suite {board.suite_hash[:12]}, "
                     f"judge {board.judge_hash[:12]}. Models whose intervals overlap are not clearly apart.")
    if board.left_out:
        lines.append("\nLeft out:")
        lines += [f"  {run}: {why}" for run, why in board.left_out]
    return "\n".join(lines)


def to_json(board: Board) -> str:
    return json.dumps({"runs": board.runs, "left_out": [{"run": r, "why": w} for r, w in board.left_out],
                       "suite_hash": board.suite_hash, "judge_hash": board.judge_hash,
                       "models": json.loads(board.table.to_json(orient="records"))}, indent=2)
