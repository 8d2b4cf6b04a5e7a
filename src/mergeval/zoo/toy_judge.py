"""The toy Proctora: a judge of the zoo's size that really grades the zoo's answers.

It reads a judge prompt rendered by mergeval's own template and writes `[RESULT] 5` (the answer
matches the expected answer named in the criterion) or `[RESULT] 1`, then `</s>`. The saved
judge is a plain causal LM; what made it learn to compare within the budget:

- linear probes, thrown away after training, that predict at each answer token whether it
  matches the expected token at that position and whether the answer matches so far: one on
  the last hidden states (zoo-recipe.md) and one on the layer below, which makes that layer do
  the comparison and leaves the last one to sum it up;
- question groups: each training step shows a few questions, each with its right answer and
  several wrong ones. The prompt up to the answer is run once per question and its keys and
  values are shared by all its answers, so an answer costs ~12 tokens instead of ~95, and
  the question alone never tells the verdict.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mergeval.proctora.prompt import render_prompt
from mergeval.zoo import toy_tasks as tasks
from mergeval.zoo.merging import standard_merges
from mergeval.zoo.model_files import load_model, save_model
from mergeval.zoo.toy_items import criterion
from mergeval.zoo.toy_judge_data import (
    MAX_ANSWER_TOKENS,
    PromptCodec,
    Question,
    add_questions,
    load_template,
    near_miss,
    sample_rev_question,
)
from mergeval.zoo.toy_models import torch_seed
from mergeval.zoo.training import Schedule, generate, make_model, train
from mergeval.zoo.vocab import JUDGE_CHAT_TEMPLATE, RESULT, ZOO_VOCAB, Codec, judge_vocab, make_tokenizer

__all__ = ["build_judge", "judge_recipe", "load_template", "JUDGE_MAX_NEW_TOKENS"]

VERSION = 1  # bump when a change to the code changes the weights it trains
MAX_POSITIONS = 192  # a judge prompt is ~90-120 tokens
JUDGE_MAX_NEW_TOKENS = 4  # `[RESULT] 5 </s>`

FULL = {
    # batch = questions per step; each comes with its right answer and answers - 1 wrong ones
    # ~2,800 steps x 64 answers is ~2.5-3 min on one thread; the comparison forms after ~1,500
    "schedule": Schedule(steps=2800, batch=8, lr=3e-3, warmup=100, weight_decay=0.01, clip=1.0),
    "answers": 8,
    # 3 layers, the probe on layer 2: the first two compare each answer token, the last sums
    # it up. The recipe's 2 layers reached kappa 0.80-0.86 in this budget here (reversals).
    "layers": 3,
    "probe_layers": [2],  # outputs of these layers (hidden_states[k]) get a probe too
    "collect_rev": 700,  # rev training questions the zoo models answer (all 300 add ones too)
    "rev_lengths": [2, 3, 4, 5, 5, 6, 6],  # drawn per step; the test items have 5 and 6
    "real_wrong": 0.5,  # share of wrong answers taken from the zoo models' real ones
}
QUICK = {
    **FULL,
    "schedule": Schedule(steps=40, batch=4, lr=3e-3, warmup=5, weight_decay=0.01, clip=1.0),
    "answers": 4,
    "collect_rev": 20,
}
ZOO_MODELS = ("base", "spec_add", "spec_rev")
# Merges give wrong answers of their own (a letter of the string in the wrong place, say): the
# judge sees those of these simple merges on training questions, never on test items.
COLLECT_MERGES = ("linear_0.5", "task_arithmetic_1.0", "task_arithmetic_0.7")


def judge_recipe(quick: bool) -> dict:
    cfg = QUICK if quick else FULL
    return {
        "version": VERSION,
        "max_positions": MAX_POSITIONS,
        "max_answer_tokens": MAX_ANSWER_TOKENS,
        "collect_merges": COLLECT_MERGES,
        **{k: (v.as_dict() if isinstance(v, Schedule) else v) for k, v in cfg.items()},
    }


def collect_answers(zoo: dict[str, Path], questions: list[Question], seed: int,
                    log: Callable[[str], None]) -> dict[str, list[str]]:
    """Wrong answers of the zoo models and simple merges to training questions (greedy and
    one sampled each)."""
    codec = Codec(ZOO_VOCAB)
    prompts = [tasks.prompt(q.text) for q in questions]
    gen = torch.Generator().manual_seed(torch_seed(seed, "judge/collect"))
    wrong: dict[str, set[str]] = {q.text: set() for q in questions}
    model = load_model(zoo["base"])
    states = {name: load_model(zoo[name]).state_dict() for name in ZOO_MODELS}
    merged = standard_merges(*(states[n] for n in ZOO_MODELS))
    states.update({n: merged[n] for n in COLLECT_MERGES})
    for name, state in states.items():
        model.load_state_dict(state)
        for sample in (False, True):
            answers = generate(model, codec, prompts, max_new_tokens=MAX_ANSWER_TOKENS, sample=sample, generator=gen)
            for q, a in zip(questions, answers):
                if a != q.expected:
                    wrong[q.text].add(a)
    n = sum(len(v) for v in wrong.values())
    log(f"proctora: collected {n} distinct wrong answers of {', '.join(states)} on {len(questions)} questions")
    return {k: sorted(v) for k, v in wrong.items() if v}


@dataclass
class Graded:
    """One answer to a question, from the answer on: what the judge reads and should say."""

    suffix: list[int]  # prompt tokens from the answer on, then the verdict tokens
    verdict_at: int  # where in suffix the verdict tokens start
    probe: list[tuple[int, float, float]]  # (index in suffix, token matches, all matches so far)
    ok: bool


class QuestionSampler:
    """Training questions with a right answer and several wrong ones each."""

    def __init__(self, pc: PromptCodec, codec: Codec, cfg: dict, add_train: list[Question],
                 add_ext: list[Question], rev_pool: list[Question], real_wrong: dict[str, list[str]]):
        self.pc, self.codec, self.cfg = pc, codec, cfg
        self.add_train, self.add_ext = add_train, add_ext
        self.rev_by_len: dict[int, list[Question]] = {}
        for q in rev_pool:
            self.rev_by_len.setdefault(len(q.expected.split()), []).append(q)
        self.real_wrong = real_wrong
        self.verdict = {True: codec.encode(f"{RESULT} 5 </s>"), False: codec.encode(f"{RESULT} 1 </s>")}

    def questions(self, rng: random.Random) -> list[Question]:
        """Half add questions, half rev questions of one length (so they share a prompt length)."""
        n_add = self.cfg["schedule"].batch // 2
        qs = [rng.choice(self.add_train if rng.random() < 0.6 else self.add_ext) for _ in range(n_add)]
        length = rng.choice(self.cfg["rev_lengths"])
        pool = self.rev_by_len.get(length, [])
        for _ in range(self.cfg["schedule"].batch - n_add):
            if pool and rng.random() < 0.5:
                qs.append(rng.choice(pool))
            else:
                while len((q := sample_rev_question(rng)).expected.split()) != length:
                    pass
                qs.append(q)
        return qs

    def wrong(self, q: Question, rng: random.Random) -> str:
        real = self.real_wrong.get(q.text)
        if real and rng.random() < self.cfg["real_wrong"]:
            return rng.choice(real)
        return near_miss(q, rng)

    def group(self, q: Question, rng: random.Random) -> tuple[list[int], list[Graded]]:
        """The shared prompt up to the answer, and the right and wrong answers graded."""
        answers = [q.expected] + [self.wrong(q, rng) for _ in range(self.cfg["answers"] - 1)]
        prefix: list[int] = []
        rows = []
        e = q.expected.split()
        for answer in answers:
            answer = " ".join(answer.split()[:MAX_ANSWER_TOKENS])
            ids, start, n = self.pc.encode(q, answer)
            prefix = ids[:start]
            ok = answer == q.expected
            a = answer.split()
            probe, so_far = [], True
            for j in range(n + 1):  # each answer token, then the token after the answer
                match = (j < len(e) and a[j] == e[j]) if j < n else ok
                so_far = so_far and match
                probe.append((j, float(match), float(so_far)))
            rows.append(Graded(ids[start:] + self.verdict[ok], len(ids) - start, probe, ok))
        return prefix, rows


def group_losses(model, probes, cfg: dict, groups: list[tuple[list[int], list[Graded]]], pad: int,
                 score_ids: tuple[int, int]):
    """Weighted verdict and probe losses of question groups, and the balanced accuracy.

    Groups with equal prompt lengths run together: their prompts once, then all their answers
    on top of the prompts' keys and values (the same values and gradients as full prompts)."""
    by_len: dict[int, list] = {}
    for prefix, rows in groups:
        by_len.setdefault(len(prefix), []).append((prefix, rows))
    m = cfg["answers"]
    logits, targets, v_weights, p_out, p_labels, p_weights = [], [], [], [], [], []
    for batch in by_len.values():
        rows = [r for _, rs in batch for r in rs]
        width = max(len(r.suffix) for r in rows)
        suffix = torch.full((len(rows), width), pad, dtype=torch.long)
        vr, vc, vt, vw, pr, pc, pl, pw = [], [], [], [], [], [], [], []
        for g in range(len(batch)):
            group = rows[g * m : (g + 1) * m]
            n_ok = sum(r.ok for r in group)
            for i, r in enumerate(group, start=g * m):
                suffix[i, : len(r.suffix)] = torch.tensor(r.suffix)
                # each question weighs 1: half on its right answer, half on its wrong ones
                w = 0.5 / n_ok if r.ok else 0.5 / (len(group) - n_ok)
                for k in range(r.verdict_at, len(r.suffix)):
                    vr.append(i), vc.append(k - 1), vt.append(r.suffix[k]), vw.append(w)
                for j, match, so_far in r.probe:
                    pr.append(i), pc.append(j), pl.append((match, so_far)), pw.append(w)
        cache = model.model(input_ids=torch.tensor([prefix for prefix, _ in batch]), use_cache=True).cache
        cache.batch_repeat_interleave(m)
        out = model.model(input_ids=suffix, cache=cache, use_cache=True, output_hidden_states=True)
        states = [out.last_hidden_state] + [out.hidden_states[k] for k in cfg["probe_layers"]]
        logits.append(model.lm_head(out.last_hidden_state[vr, vc]))
        targets.append(torch.tensor(vt))
        v_weights.append(torch.tensor(vw))
        p_out.append(torch.cat([head(h[pr, pc]) for head, h in zip(probes, states)], 1))
        p_labels.append(torch.tensor(pl).repeat(1, len(probes)))
        p_weights.append(torch.tensor(pw))
    logits, targets, weights = torch.cat(logits), torch.cat(targets), torch.cat(v_weights)
    verdict = (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()
    pw = torch.cat(p_weights)
    bce = F.binary_cross_entropy_with_logits(torch.cat(p_out), torch.cat(p_labels), reduction="none")
    probe = (bce.mean(1) * pw).sum() / pw.sum()
    with torch.no_grad():
        score = (targets == score_ids[0]) | (targets == score_ids[1])  # the tokens 5 and 1
        right = (logits[score].argmax(-1) == targets[score]).float()
        accuracy = float((right * weights[score]).sum() / weights[score].sum())
    return verdict, probe, accuracy


def build_judge(path: Path, *, zoo: dict[str, Path], template: str, seed: int, quick: bool,
                log: Callable[[str], None]) -> dict:
    cfg = QUICK if quick else FULL
    schedule: Schedule = cfg["schedule"]
    rng = random.Random(f"{seed}/proctora/data")
    add_train = add_questions(extended=False)
    add_ext = add_questions(extended=True)
    rev_pool = [sample_rev_question(rng) for _ in range(cfg["collect_rev"])]
    collect = (add_train if not quick else rng.sample(add_train, 20)) + rev_pool
    real_wrong = collect_answers(zoo, collect, seed, log)

    vocab = judge_vocab([
        render_prompt(template, question="x", criterion=criterion("x"), answer="x"),
        render_prompt(template, question="x", criterion="x", answer="x", reference="x",
                      score_descriptions={1: "x", 5: "x"}),
    ])
    codec = Codec(vocab)
    sampler = QuestionSampler(PromptCodec(template, codec), codec, cfg, add_train, add_ext, rev_pool, real_wrong)

    torch.manual_seed(torch_seed(seed, "proctora"))
    model = make_model(codec, layers=cfg["layers"], max_positions=MAX_POSITIONS)
    # Thrown away after training: one on the last hidden states, one per layer in probe_layers.
    probes = torch.nn.ModuleList(
        torch.nn.Linear(model.config.hidden_size, 2) for _ in range(1 + len(cfg["probe_layers"])))
    model.train()
    seen = {"acc": 0.5}  # running verdict accuracy on training batches, for the log
    score_ids = (codec.ids["5"], codec.ids["1"])

    def step_loss(_step: int) -> torch.Tensor:
        groups = [sampler.group(q, rng) for q in sampler.questions(rng)]
        verdict, probe, accuracy = group_losses(model, probes, cfg, groups, codec.pad, score_ids)
        seen["acc"] = 0.98 * seen["acc"] + 0.02 * accuracy
        return verdict + probe

    params = list(model.parameters()) + list(probes.parameters())
    loss = train(params, schedule, step_loss, name="proctora", log=log,
                 status=lambda: f"verdict accuracy {seen['acc']:.3f}")
    save_model(path, model, make_tokenizer(vocab, JUDGE_CHAT_TEMPLATE), codec, max_new_tokens=JUDGE_MAX_NEW_TOKENS)
    (path / "prompt_template.txt").write_text(template, encoding="utf-8")
    return {"final_loss": round(loss, 4), "recipe_detail": judge_recipe(quick)}
