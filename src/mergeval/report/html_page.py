"""report.html: the whole run in one self-contained page (inline CSS and SVG, no network).

Everything a model wrote, and every name a user chose, is untrusted text: the template is
rendered with autoescaping on, and the SVG below escapes each label itself. Only strings built
here from numbers and escaped text are marked safe.
"""

from __future__ import annotations

import html
import json
import re
from importlib.resources import files

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from mergeval.report.markdown import interval, rank_range
from mergeval.report.rank import best_rows

BLUES = [(0.0, (247, 251, 255)), (0.25, (198, 219, 239)), (0.5, (107, 174, 214)),
         (0.75, (33, 113, 181)), (1.0, (8, 48, 107))]  # ColorBrewer Blues: readable in grey too
VERDICT_COLOR = {"better": "#1a7f37", "worse": "#cf222e", "no clear difference": "#57606a"}


def _num(x, digits: int = 3, signed: bool = False) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def heat_color(v: float) -> str:
    if v is None or pd.isna(v):
        return "background:#eaeef2;color:#57606a"
    v = min(max(float(v), 0.0), 1.0)
    for (a, ca), (b, cb) in zip(BLUES, BLUES[1:]):
        if v <= b:
            t = (v - a) / (b - a)
            rgb = [round(x + (y - x) * t) for x, y in zip(ca, cb)]
            break
    return f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{'#fff' if v > 0.55 else '#1f2328'}"


def interval_bar(score, low, high, width: int = 100) -> Markup:
    """A 0..1 track with the interval as a bar and the score as a dot."""
    if pd.isna(score):
        return Markup("")
    x = lambda v: 4 + (width - 8) * min(max(float(v), 0.0), 1.0)  # noqa: E731
    lo, hi = (low, high) if not (pd.isna(low) or pd.isna(high)) else (score, score)
    return Markup(
        f'<svg class="bar" width="{width}" height="14" role="img" aria-label="{_num(score)} ({_num(lo)} to {_num(hi)})">'
        f'<line x1="4" x2="{width - 4}" y1="7" y2="7" stroke="#d0d7de"/>'
        f'<rect x="{x(lo):.1f}" y="4" width="{max(x(hi) - x(lo), 1.5):.1f}" height="6" rx="3" fill="#9ecae1"/>'
        f'<circle cx="{x(score):.1f}" cy="7" r="3.5" fill="#08306b"/></svg>')


def _ticks(lo: float, hi: float) -> list[float]:
    step = 10 ** np.floor(np.log10((hi - lo) / 4))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    return [round(t, 10) for t in np.arange(np.ceil(lo / step) * step, hi + step / 2, step)]


def forest_plot(comparisons: pd.DataFrame) -> Markup:
    """Each merge minus its best parent: the difference and its interval, zero marked."""
    rows = best_rows(comparisons).reset_index().sort_values(["diff", "merge"], ascending=[False, True])
    rows = rows.dropna(subset=["diff"])
    if rows.empty:
        return Markup('<p class="muted">No merge has a graded parent to compare with.</p>')
    lo = min(rows["ci_low"].min(), 0.0)
    hi = max(rows["ci_high"].max(), 0.0)
    pad = max((hi - lo) * 0.08, 0.01)
    lo, hi = lo - pad, hi + pad
    left, plot_w, row_h, top = 250, 380, 26, 10
    height = top + row_h * len(rows) + 34
    x = lambda v: left + plot_w * (float(v) - lo) / (hi - lo)  # noqa: E731
    out = [f'<svg class="forest" width="{left + plot_w + 250}" height="{height}" role="img" '
           f'aria-label="forest plot: each merge minus its best parent">']
    bottom = top + row_h * len(rows)
    for t in _ticks(lo, hi):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{bottom}" stroke="#eaeef2"/>'
                   f'<text x="{x(t):.1f}" y="{bottom + 16}" class="tick">{"0" if t == 0 else f"{t:+g}"}</text>')
    out.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{bottom}" stroke="#57606a" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{bottom + 31}" class="axis">merge − best parent (score, paired)</text>')
    for i, r in enumerate(rows.to_dict("records")):
        y = top + row_h * i + row_h / 2
        color = VERDICT_COLOR.get(r["verdict"], "#57606a")
        label = f"{r['merge']} − {r['parent']}"
        short = label if len(label) <= 38 else label[:37] + "…"
        out.append(f'<text x="{left - 10}" y="{y + 4}" class="label"><title>{html.escape(label)}</title>'
                   f'{html.escape(short)}</text>')
        if not (pd.isna(r["ci_low"]) or pd.isna(r["ci_high"])):
            out.append(f'<line x1="{x(r["ci_low"]):.1f}" x2="{x(r["ci_high"]):.1f}" y1="{y}" y2="{y}" '
                       f'stroke="{color}" stroke-width="3" stroke-linecap="round"/>')
        out.append(f'<circle cx="{x(r["diff"]):.1f}" cy="{y}" r="5" fill="{color}"/>')
        out.append(f'<text x="{left + plot_w + 12}" y="{y + 4}" class="value">{_num(r["diff"], signed=True)} '
                   f'({html.escape(interval(r["ci_low"], r["ci_high"], signed=True))}) · '
                   f'{r["won"]}/{r["lost"]}/{r["tied"]}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def markdown_inline(text: str) -> Markup:
    """`code` and **bold** from the summary sentences, after escaping everything else."""
    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", s))


def judge_panel(frame: pd.DataFrame, scale) -> dict:
    """Unscored counts and reasons, unstable items, and judge-vs-checks agreement."""
    unscored = frame[frame["score"].isna()]
    reasons = unscored.groupby("unscored_reason", dropna=False).agg(grades=("model", "size"), models=("model", "nunique"))
    unstable = frame[frame["unstable"]].groupby("item_id").agg(models=("model", "nunique"), spread=("judge_spread", "max"))
    both = frame[(frame["checks_total"].fillna(0) > 0) & frame["judge_score"].notna()]
    low, high = scale
    checks_pass = (both["checks_passed"] / both["checks_total"]).astype(float) >= 0.5
    judge_pass = (both["judge_score"] - low) / (high - low) >= 0.5
    table = {(c, j): int(((checks_pass == c) & (judge_pass == j)).sum()) for c in (True, False) for j in (True, False)}
    agree = table[(True, True)] + table[(False, False)]
    return {
        "n_unscored": len(unscored), "n_grades": len(frame),
        "reasons": [{"reason": r if isinstance(r, str) else "(none given)", **v} for r, v in reasons.to_dict("index").items()],
        "unstable": [{"item_id": i, **v} for i, v in unstable.sort_values("spread", ascending=False).to_dict("index").items()],
        "both": len(both), "agree": agree, "table": table,
        "agree_pct": f"{100 * agree / len(both):.0f} %" if len(both) else "–",
    }


def items_view(plan, frame: pd.DataFrame, order: list[str]) -> list[dict]:
    """Per item, every model's answer; the items the models disagree on most come first."""
    rank_of = {m: i for i, m in enumerate(order)}
    # One sort and one pass over the records: per-item pandas sorting cost ~4 ms an item.
    ordered = frame.assign(_o=frame["model"].map(rank_of)).sort_values("_o", kind="stable")
    by_item: dict[str, list[dict]] = {}
    for r in ordered.to_dict("records"):
        by_item.setdefault(r["item_id"], []).append(r)
    out = []
    for it in plan.items:
        records = by_item.get(it.id)
        if not records:
            continue
        scores = [r["score"] for r in records if not pd.isna(r["score"])]
        spread = float(max(scores) - min(scores)) if scores else 0.0
        rows = [{"model": r["model"], "score": _num(r["score"]), "unscored": r["unscored_reason"] if pd.isna(r["score"]) else None,
                 "judge": _num(r["judge_score"], 1), "checks": (f"{r['checks_passed']}/{r['checks_total']}"
                                                               if not pd.isna(r["checks_total"]) else "–"),
                 "unstable": bool(r["unstable"]), "answer": r["answer"] if not pd.isna(r["answer"]) else "",
                 "style": heat_color(r["score"]), **conversation_view(r)} for r in records]
        out.append({"id": it.id, "skill": it.skill, "question": it.question, "system": it.system, "turns": it.turns,
                    "followups": it.followups, "player": it.player.brief if it.player else None,
                    "criterion": it.criterion, "reference": it.reference, "weight": it.weight,
                    "checks": [f"{c.name}: {c.arg}" if getattr(c, "arg", None) is not None else c.name for c in it.checks],
                    "spread": spread, "mean": _num(sum(scores) / len(scores) if scores else float("nan")), "unstable": any(r["unstable"] for r in rows),
                    "rows": rows})
    out.sort(key=lambda v: (-v["spread"], v["id"]))
    for i, v in enumerate(out):
        v["anchor"] = f"item-{i}"
    return out


def conversation_view(r: dict) -> dict:
    """A conversation's row: its transcript turn by turn, each answer's judge score (per_turn)
    and the weakest turn; None for a one-question item."""
    if not isinstance(r.get("transcript"), str):  # the frame holds it as JSON text (results.py)
        return {"transcript": None}
    transcript = json.loads(r["transcript"])
    scores = json.loads(r["turn_scores"]) if isinstance(r.get("turn_scores"), str) else []
    weakest = None if pd.isna(r.get("weakest_turn")) else int(r["weakest_turn"])
    who = {"assistant": "model", "script": "player (scripted)", "player": "player (simulated)"}
    return {"transcript": [{**m, "who": who.get(m["role"] if m["role"] == "assistant" else m.get("by"), "player"),
                            "score": _num(scores[m["turn"] - 1], 1) if m["role"] == "assistant" and
                            len(scores) >= m["turn"] and scores[m["turn"] - 1] is not None else None,
                            "weakest": m["role"] == "assistant" and m["turn"] == weakest} for m in transcript]}


def _size(n) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min" if h else (f"{m} min {s} s" if m else f"{s} s")


def render(plan, run: dict, ranking: pd.DataFrame, comparisons: pd.DataFrame, skill_ci, frame: pd.DataFrame,
           summary: list[str]) -> str:
    skills = sorted({it.skill for it in plan.items})
    ranked = "ci_low" in ranking and not ranking.empty
    best = best_rows(comparisons)
    table = []
    for r in ranking.to_dict("records") if ranked else []:
        vs = best.loc[r["model"]] if r["model"] in best.index else None
        table.append({**r, "score_s": _num(r["score"]), "ci": interval(r["ci_low"], r["ci_high"]),
                      "bar": interval_bar(r["score"], r["ci_low"], r["ci_high"]),
                      "ranks": rank_range(r["rank_low"], r["rank_high"]),
                      "skills": [{"v": _num(r.get(s)), "style": heat_color(r.get(s))} for s in skills],
                      "vs": _num(vs["diff"], signed=True) if vs is not None else "–",
                      "vs_ci": interval(vs["ci_low"], vs["ci_high"], signed=True) if vs is not None else "",
                      "verdict": vs["verdict"] if vs is not None else "", "overall_style": heat_color(r["score"])})
    ci = {(r["model"], r["skill"]): interval(r["ci_low"], r["ci_high"]) for r in skill_ci.to_dict("records")} \
        if skill_ci is not None else {}
    anchors = {}
    items = items_view(plan, frame, list(ranking["model"])) if ranked else []
    for v in items:
        anchors[v["id"]] = v["anchor"]
    parents = {c.name: c.parents for c in plan.candidates}
    start, end = pd.Timestamp(run["started"]), pd.Timestamp(run["finished"])
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(files("mergeval.report").joinpath("report_template.html").read_text(encoding="utf-8"))
    return template.render(
        run=run, plan=plan, skills=skills, table=table, skill_ci=ci, items=items, anchors=anchors,
        summary=[markdown_inline(s) for s in summary], forest=forest_plot(comparisons) if ranked else "",
        judge=judge_panel(frame, plan.judge.scale) if ranked else None, parents=parents,
        recipes=sorted(plan.recipes, key=lambda r: r.name), winner=table[0]["model"] if table else None,
        duration=_duration((end - start).total_seconds()), mb=_size, num=_num,
        settings_json=json.dumps(run["settings"], indent=2, sort_keys=True, default=str),
        skill_names=", ".join(skills), n_models=len(table),
    )
