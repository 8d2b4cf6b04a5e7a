"""The embedded judge with subword vocabularies: verdict probabilities (G-Eval) still come back.

    PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/test_subword_judge.py

A tiny judge of a real family (tests/real_world.py: byte-level BPE for Qwen2, SentencePiece-style
Unigram for Mistral) is taught in a second or two, on a CPU, to reply one fixed verdict. Its
number is then a subword token ("Ġ4", "▁4", or "4" after a "▁" piece), and with Unigram it may
share its token with the text around it: the score's probability is read from the judge's
real logits either way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_world import make_model

PROMPT = [{"role": "user", "content": "grade this answer : the cat sat on a mat"}]


def taught_judge(path: Path, family: str, reply: str, steps: int = 80) -> Path:
    """A tiny random model of `family`, trained to answer PROMPT with `reply` and stop."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergeval.answering.chat import encode_prompt

    make_model(path, family, seed=11)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompt = encode_prompt(tok, tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False))
    target = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[-100] * len(prompt) + target])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(path)
    return path


@pytest.mark.parametrize("family, reply", [
    ("qwen2", "good . [RESULT] 4"),  # byte-level BPE: the number is "Ġ4"
    ("mistral", "good . [RESULT] 4"),  # SentencePiece-style: "▁4", or "▁" then "4"
    ("mistral", "good . [RESULT]4."),  # glued to its neighbours: "]", "4", "."
])
def test_verdict_probabilities_with_a_subword_judge(tmp_path, family, reply):
    from mergeval.proctora.backend_transformers import TransformersBackend
    from mergeval.proctora.settings import JudgeSettings

    judge = taught_judge(tmp_path / "judge", family, reply)
    backend = TransformersBackend(JudgeSettings(model=str(judge), max_tokens=16, logprobs=True))
    [done] = backend.complete([PROMPT], sample_index=0)
    assert done.text.strip() == reply, done.text
    probs = done.verdict_probs
    assert probs is not None and set(probs) == {1, 2, 3, 4, 5}
    assert max(probs, key=probs.get) == 4 and abs(sum(probs.values()) - 1) < 1e-6


def test_a_judge_whose_template_refuses_the_system_role_gets_its_persona_in_the_user_turn(tmp_path):
    from mergeval.proctora.backend_transformers import TransformersBackend
    from mergeval.proctora.settings import JudgeSettings

    judge = make_model(tmp_path / "gemma-judge", "gemma2", seed=12)  # "System role not supported"
    backend = TransformersBackend(JudgeSettings(model=str(judge), system="you are a strict grader .",
                                                max_tokens=4, logprobs=False))
    backend.check_alive()  # no JudgeUnavailable: the template accepts the folded conversation
    [reply] = backend.complete([[{"role": "system", "content": "you are a strict grader ."}, *PROMPT]], sample_index=0)
    assert reply.error is None and isinstance(reply.text, str)
