"""Calibration: how well does Proctora agree with human scores on the same answers?

    mergeval calibrate                                  # judge/calibration/labels.jsonl
    mergeval calibrate --labels judge/calibration --judge judge/other.yaml
    mergeval calibrate --from-run reports/<run>         # exact-match labels from a toy run

Labels are JSON lines (schema in judge/calibration/README.md), read strictly: an unknown or
repeated key, a missing one or a score off the judge's scale is an error naming file:line.
Each labelled answer is graded through the Judge class (so its on-disk call cache applies:
calibrating again with the same judge makes no call), then compared with the human score:

- exact and within-one agreement, quadratic weighted Cohen's kappa and the confusion matrix
  use the judge's score rounded to the nearest whole point (halves up: 3.5 -> 4), since with
  several samples the judge's score is their mean;
- Spearman uses the unrounded scores; ties get the mean of the ranks they span (midranks),
  then Pearson's r of the ranks, the usual tie correction (scipy's spearmanr does the same);
- an unscored answer (no readable verdict) is counted apart: never agreement, never a 0;
- a label whose item changed since it was labelled (item_hash differs) is counted as stale.
A statistic that is undefined (kappa when both raters gave one and the same score to every
answer; Spearman when either gave a single score) is None, not a made-up 1 or 0.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from mergeval.core.errors import InputError, Problem
from mergeval.core.hashing import file_hash
from mergeval.core.workspace import Workspace
from mergeval.inputs.items import Item, load_items

REQUIRED = {"item_id": str, "suite": str, "answer": str, "human_score": int, "who": str, "when": str}
OPTIONAL = {"item_hash": str, "model": str, "source": str, "note": str}
DEFAULT_LABELS = Path("judge/calibration/labels.jsonl")
FROM_RUNS = Path("judge/calibration/from-runs")  # labels made from runs' checks (gitignored)
GRADE_CHUNK = 64  # labelled answers per Judge.grade call


# -- label files ------------------------------------------------------------------------------


def label_files(path: Path) -> list[Path]:
    return sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"repeated key(s): {', '.join(repeated)}")
    return dict(pairs)


def check_label(data, path: Path, line: int, scale: tuple[int, int] | None = None) -> list[Problem]:
    """Every problem with one label record (an empty list when it is valid)."""
    if not isinstance(data, dict):
        return [Problem(path, line, "a label must be a JSON object")]
    out = []
    for key in sorted(set(data) - set(REQUIRED) - set(OPTIONAL)):
        out.append(Problem(path, line, f"unknown key {key!r} (allowed: {', '.join([*REQUIRED, *OPTIONAL])})"))
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key not in data:
            if key in REQUIRED:
                out.append(Problem(path, line, f"missing key {key!r}"))
        elif not isinstance(data[key], kind) or isinstance(data[key], bool):
            out.append(Problem(path, line, f"{key} must be a {kind.__name__}, got {data[key]!r}"))
    if isinstance(data.get("when"), str):
        try:
            datetime.fromisoformat(data["when"])
        except ValueError:
            out.append(Problem(path, line, f"when must be an ISO 8601 time, got {data['when']!r}"))
    score = data.get("human_score")
    if scale and isinstance(score, int) and not scale[0] <= score <= scale[1]:
        out.append(Problem(path, line, f"human_score {score} is outside the judge's scale {scale[0]}..{scale[1]}"))
    return out


def read_labels(path: Path, scale: tuple[int, int] | None = None) -> list[dict]:
    """Every label under a file or folder, each with `_file` and `_line`; InputError lists all problems."""
    if not path.exists():
        raise InputError([Problem(path, None, "no labels here yet: score answers in `mergeval rubric`, or make "
                                              "exact-match labels with `mergeval calibrate --from-run RUN`")])
    labels, problems = [], []
    for file in label_files(path):
        for n, text in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                data = json.loads(text, object_pairs_hook=_no_duplicates)
            except ValueError as e:
                problems.append(Problem(file, n, f"not a JSON object: {e}"))
                continue
            found = check_label(data, file, n, scale)
            problems += found
            if not found:
                labels.append({**data, "_file": str(file), "_line": n})
    if problems:
        raise InputError(problems)
    return labels


def make_label(item: Item, answer: str, human_score: int, who: str, **optional) -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    label = {"item_id": item.id, "suite": item.suite, "item_hash": item.hash, "answer": answer,
             "human_score": int(human_score), "who": who, "when": now}
    return {**label, **{k: v for k, v in optional.items() if v}}


def append_label(path: Path, label: dict) -> None:
    """Append one label line (validated first: a bad line would break every later calibrate)."""
    problems = check_label(label, path, 0)
    if problems:
        raise InputError(problems)
    from mergeval.core.store import append_jsonl

    append_jsonl(path, [label])


def labels_from_run(run_dir: Path, scale: tuple[int, int]) -> tuple[list[dict], int]:
    """Exact-match labels from a run's deterministic checks: all passed → top of the scale,
    any failed → bottom. Returns (labels, answers without checks, which get no label)."""
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    suite = Path(run["settings"]["items"]).name
    labels, skipped = [], 0
    for line in (run_dir / "results.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if not r["checks"]:
            skipped += 1
            continue
        passed = all(c["passed"] for c in r["checks"])
        labels.append({"item_id": r["item_id"], "suite": suite, "item_hash": r["item_hash"], "answer": r["answer"],
                       "human_score": scale[1] if passed else scale[0], "who": "exact-match",
                       "when": run["finished"], "model": r["model"], "source": f"run {run['run']}"})
    return labels, skipped


# -- agreement statistics ---------------------------------------------------------------------


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def confusion(human: list[int], judge: list[int], scale: tuple[int, int]) -> list[list[int]]:
    """Rows: the human's score, columns: the judge's, both from the bottom of the scale."""
    lo, hi = scale
    table = [[0] * (hi - lo + 1) for _ in range(hi - lo + 1)]
    for h, j in zip(human, judge):
        table[h - lo][j - lo] += 1
    return table


def quadratic_kappa(human: list[int], judge: list[int], scale: tuple[int, int]) -> float | None:
    """1 - sum(w*observed) / sum(w*expected), w = (i-j)^2 / (k-1)^2, expected from the marginals."""
    if not human:
        return None
    table = confusion(human, judge, scale)
    k, n = len(table), len(human)
    rows = [sum(r) / n for r in table]
    cols = [sum(table[i][j] for i in range(k)) / n for j in range(k)]
    w = [[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)]
    observed = sum(w[i][j] * table[i][j] / n for i in range(k) for j in range(k))
    expected = sum(w[i][j] * rows[i] * cols[j] for i in range(k) for j in range(k))
    return None if expected == 0 else 1 - observed / expected


def midranks(values: list[float]) -> list[float]:
    """1-based ranks; tied values all get the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in order[i : j + 1]:
            ranks[t] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2:
        return None
    rx, ry = midranks(x), midranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def agreement(pairs: list[tuple[int, float | None]], scale: tuple[int, int]) -> dict:
    """Agreement of (human score, judge score or None = unscored) pairs."""
    scored = [(h, j) for h, j in pairs if j is not None]
    human = [h for h, _ in scored]
    judge = [round_half_up(j) for _, j in scored]
    n = len(scored)
    return {
        "n_labels": len(pairs),
        "n_scored": n,
        "n_unscored": len(pairs) - n,
        "exact": sum(h == j for h, j in zip(human, judge)) / n if n else None,
        "within_one": sum(abs(h - j) <= 1 for h, j in zip(human, judge)) / n if n else None,
        "kappa_quadratic": quadratic_kappa(human, judge, scale),
        "spearman": spearman([float(h) for h in human], [j for _, j in scored]),
        "scale": list(scale),
        "confusion": confusion(human, judge, scale),  # rows human, columns judge
    }


def format_agreement(stats: dict) -> str:
    def f(x):
        return "undefined" if x is None else f"{x:.3f}"

    lo, hi = stats["scale"]
    lines = [
        f"labels {stats['n_labels']}: scored {stats['n_scored']}, unscored {stats['n_unscored']}"
        + (f", stale {stats['n_stale']}" if stats.get("n_stale") else ""),
        f"exact {f(stats['exact'])}  within one {f(stats['within_one'])}  "
        f"weighted kappa {f(stats['kappa_quadratic'])}  Spearman {f(stats['spearman'])}",
        "confusion (rows: human, columns: judge):",
        "       " + "".join(f"{s:>6}" for s in range(lo, hi + 1)),
    ]
    lines += [f"  {lo + i:>3}  " + "".join(f"{c:>6}" for c in row) for i, row in enumerate(stats["confusion"])]
    return "\n".join(lines)


# -- grading labelled answers -----------------------------------------------------------------


def load_suites(ws: Workspace, suites: set[str]) -> dict[tuple[str, str], Item]:
    items = {}
    for suite in sorted(suites):
        items.update({(suite, it.id): it for it in load_items(ws.items / suite)})
    return items


def grade_labels(labels: list[dict], settings, ws: Workspace, log=lambda m: None, judge=None) -> list[dict]:
    """One record per label: the human's score beside the judge's (None when unscored or stale).

    `judge`: an open Judge to reuse (the rubric app keeps one); by default one is opened here.
    """
    from mergeval.proctora.conversation import answer_requests, combine_turns
    from mergeval.proctora.judge import Judge

    items = load_suites(ws, {lb["suite"] for lb in labels})
    missing = [Problem(Path(lb["_file"]), lb["_line"], f"no item {lb['item_id']!r} in {ws.items / lb['suite']}")
               for lb in labels if (lb["suite"], lb["item_id"]) not in items]
    if missing:
        raise InputError(missing)
    live = [lb for lb in labels if lb.get("item_hash", items[lb["suite"], lb["item_id"]].hash)
            == items[lb["suite"], lb["item_id"]].hash]
    results = {}
    own = judge is None and bool(live)
    if own:
        judge = Judge(settings, ws, cache_dir=ws.judge_cache)
        judge.check_alive()
    try:
        for start in range(0, len(live), GRADE_CHUNK):
            chunk = live[start : start + GRADE_CHUNK]
            # a conversation's label holds its transcript: one request, or one per turn (per_turn)
            asked = [answer_requests(settings, items[lb["suite"], lb["item_id"]], lb["answer"]) for lb in chunk]
            graded = iter(judge.grade([r for reqs in asked for r in reqs]))
            results.update({id(lb): combine_turns(items[lb["suite"], lb["item_id"]], [next(graded) for _ in reqs])[0]
                            for lb, reqs in zip(chunk, asked)})
            log(f"graded {min(start + GRADE_CHUNK, len(live))}/{len(live)} labelled answers")
    finally:
        if own:
            judge.close()
    out = []
    for lb in labels:
        r = results.get(id(lb))
        record = {k: v for k, v in lb.items() if not k.startswith("_")}
        record.update(stale=r is None, judge_score=r.score if r else None, judge_scores=list(r.scores) if r else [],
                      judge_spread=r.spread if r else None, judge_replies=list(r.replies) if r else [],
                      unscored_reason=(r.unscored_reason if r else "the item changed since it was labelled"))
        out.append(record)
    return out


def graded_agreement(graded: list[dict], scale: tuple[int, int]) -> dict:
    """Agreement over grade_labels' records; stale labels are counted, not compared."""
    live = [g for g in graded if not g["stale"]]
    stats = agreement([(g["human_score"], g["judge_score"]) for g in live], scale)
    return {**stats, "n_labels": len(graded), "n_stale": len(graded) - len(live)}


def calibrate(ws: Workspace, settings, labels_path: Path, judge_file: Path, log=lambda m: None) -> tuple[dict, Path]:
    """Grade every label, compute agreement, save it as reports/calibration/<time>_<id>.json."""
    from mergeval.core.store import write_json
    from mergeval.report.run_folder import run_name

    labels = read_labels(labels_path, tuple(settings.scale))
    if not labels:
        raise InputError([Problem(labels_path, None, "no labels in it (JSON lines; see judge/calibration/README.md)")])
    graded = grade_labels(labels, settings, ws, log)
    stats = graded_agreement(graded, tuple(settings.scale))
    out = ws.reports / "calibration" / f"{run_name()}.json"
    write_json(out, {
        "format_version": 1,
        "labels": {str(p): file_hash(p) for p in label_files(labels_path)},
        "judge": {"file": str(judge_file), "fingerprint": settings.fingerprint(),
                  "settings": settings.model_dump(exclude={"template_text"})},
        "rounding": "judge score rounded half up for exact/within-one/kappa/confusion; Spearman unrounded, midranks",
        "agreement": stats,
        "graded": graded,
    })
    return stats, out
