"""Canary strings: has a model seen this item suite in its training data?

    mergeval canary path/to/model --items items/roleplay     # exit status 1 if any canary leaked

An item may carry `canary: <string>` in its front matter (items/roleplay/ gives all its items
one). The canary marks the suite's files, so that a crawl which swallows them carries it into
training data. It is never part of what a model is asked (answer.prompt_key and
answering.messages leaves it out), nor of the judge's prompt, nor of any report.

The test, per distinct canary: the model gets the canary's first half as plain text (its
first half of the words; a canary without spaces: its first half of the characters) and
decodes greedily for as many tokens as the rest takes, plus a margin. The canary counts as
*completed* (leaked) when the model writes back at least LEAK_SHARE of the rest, counted in
characters from the rest's start, ignoring whitespace and case (tokenizers differ in both).
A random hex id cannot come back that far by chance; a model that memorised it writes it all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LEAK_SHARE = 0.8  # of the rest's characters, written back in order from its start
MARGIN_TOKENS = 8  # decoding room past the rest's own token count (a space, a stray token)


@dataclass(frozen=True)
class Verdict:
    canary: str
    prompt: str  # what the model was given: the canary's first half
    completion: str  # what greedy decoding wrote next
    reproduced: float  # share of the rest written back (0..1), see the module docstring

    @property
    def leaked(self) -> bool:
        return self.reproduced >= LEAK_SHARE


def split(canary: str) -> tuple[str, str]:
    """(prompt, rest): the first half of the words, or of the characters for a single word."""
    words = canary.split()
    if len(words) >= 2:
        half = len(words) // 2
        return " ".join(words[:half]), " ".join(words[half:])
    if len(canary.strip()) < 2:
        raise ValueError(f"canary {canary!r} is too short to split into a prompt and a rest")
    text = canary.strip()
    return text[: len(text) // 2], text[len(text) // 2 :]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


def reproduced(completion: str, rest: str) -> float:
    """Share of `rest` that `completion` writes back from its start (whitespace, case ignored)."""
    want, got = _squash(rest), _squash(completion)
    same = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    return same / len(want) if want else 0.0


def distinct_canaries(items) -> list[str]:
    """Each canary once, in item order (a suite usually gives all its items the same one)."""
    return list(dict.fromkeys(it.canary for it in items if it.canary))


def check_model(model_dir: Path, canaries: list[str], *, trust_remote_code: bool = False,
                device: str = "cpu") -> list[Verdict]:
    """Greedy completion of each canary's first half by the model in `model_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # trust_remote_code: only when the user names this model (`--trust-remote-code`)
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 trust_remote_code=trust_remote_code).to(device).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    verdicts = []
    for canary in canaries:
        prompt, rest = split(canary)
        enc = tok(prompt, return_tensors="pt").to(device)  # raw text, as training data is read
        budget = len(tok(rest, add_special_tokens=False)["input_ids"]) + MARGIN_TOKENS
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=budget, do_sample=False, pad_token_id=pad)
        completion = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        verdicts.append(Verdict(canary, prompt, completion, reproduced(completion, rest)))
    return verdicts
