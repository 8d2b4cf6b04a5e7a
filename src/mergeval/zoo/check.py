"""How good is a built zoo? Exact match of each model, a few in-process merges, and the judge.

    .venv/bin/python -m mergeval.zoo.check zoo

Answers the 200 held-out toy items greedily with base, spec_add, spec_rev and simple merges
computed here with torch (linear, task arithmetic, TIES), then, if zoo/proctora exists, grades
every answer with the toy Proctora and reports its agreement with exact match.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from mergeval.zoo import toy_tasks as tasks
from mergeval.zoo.merging import standard_merges
from mergeval.zoo.model_files import load_model
from mergeval.zoo.toy_items import criterion
from mergeval.zoo.training import generate
from mergeval.zoo.vocab import BOS, ZOO_VOCAB, Codec


def merges(zoo: Path) -> dict[str, dict]:
    states = [load_model(zoo / n).state_dict() for n in ("base", "spec_add", "spec_rev")]
    return standard_merges(*states)


def answer_all(zoo: Path) -> dict[str, list[str]]:
    """Greedy answers of every zoo model and merge to the 200 held-out items."""
    items = tasks.heldout_items()
    prompts = [tasks.prompt(it["question"]) for it in items]
    codec = Codec(ZOO_VOCAB)
    answers = {}
    for name in ("base", "spec_add", "spec_rev"):
        answers[name] = generate(load_model(zoo / name), codec, prompts)
    model = load_model(zoo / "base")
    for name, state in merges(zoo).items():
        model.load_state_dict(state)
        answers[name] = generate(model, codec, prompts)
    return answers


def quadratic_kappa(a: list[int], b: list[int], lo: int = 1, hi: int = 5) -> float:
    k = hi - lo + 1
    obs = torch.zeros(k, k)
    for x, y in zip(a, b):
        obs[x - lo, y - lo] += 1
    obs /= obs.sum()
    exp = obs.sum(1)[:, None] * obs.sum(0)[None, :]
    idx = torch.arange(k, dtype=torch.float)
    w = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    denom = (w * exp).sum()
    return float(1 - (w * obs).sum() / denom) if denom > 0 else 1.0


def judge_scores(judge_dir: Path, questions: list[str], expected: list[str], answers: list[str]) -> list[int | None]:
    from mergeval.proctora.prompt import render_prompt
    from mergeval.zoo.toy_judge import JUDGE_MAX_NEW_TOKENS

    template = (judge_dir / "prompt_template.txt").read_text(encoding="utf-8")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(judge_dir, trust_remote_code=False).get_vocab()
    codec = Codec(sorted(ids, key=ids.get))
    prompts = [f"{BOS} " + render_prompt(template, question=q, criterion=criterion(e), answer=a)
               for q, e, a in zip(questions, expected, answers)]
    replies = generate(load_model(judge_dir), codec, prompts, max_new_tokens=JUDGE_MAX_NEW_TOKENS)
    scores = []
    for r in replies:
        m = re.findall(r"\[RESULT\]\s*(\d+)", r)
        scores.append(int(m[-1]) if m else None)
    return scores


def main(zoo: Path) -> None:
    torch.set_num_threads(1)
    items = tasks.heldout_items()
    answers = answer_all(zoo)
    print(f"{'model':22s} add   rev   both")
    for name, ans in answers.items():
        ok = [a == it["expected"] for a, it in zip(ans, items)]
        add, rev = sum(ok[:100]) / 100, sum(ok[100:]) / 100
        print(f"{name:22s} {add:.2f}  {rev:.2f}  {(add + rev) / 2:.3f}")
    if not (zoo / "proctora" / "zoo.json").exists():
        return
    names = list(answers)
    qs = [it["question"] for it in items] * len(names)
    es = [it["expected"] for it in items] * len(names)
    ans = [a for n in names for a in answers[n]]
    truth = [5 if a == e else 1 for a, e in zip(ans, es)]
    scores = judge_scores(zoo / "proctora", qs, es, ans)
    unparsed = sum(s is None for s in scores)
    pairs = [(t, s) for t, s in zip(truth, scores) if s is not None]
    acc = sum(t == s for t, s in pairs) / len(pairs)
    kappa = quadratic_kappa([t for t, _ in pairs], [s for _, s in pairs])
    print(f"judge: {len(ans)} answers, accuracy {acc:.3f}, quadratic kappa {kappa:.3f}, unparseable {unparsed}")
    for i, n in enumerate(names):
        t = truth[i * 200 : (i + 1) * 200]
        s = scores[i * 200 : (i + 1) * 200]
        print(f"  {n:22s} exact {sum(x == 5 for x in t) / 200:.3f}  judge {sum(x == 5 for x in s) / 200:.3f}")
    wrong = [(q, e, a, s) for q, e, a, t, s in zip(qs, es, ans, truth, scores) if s != t]
    for w in wrong[:15]:
        print("  disagree:", w)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "zoo"))
