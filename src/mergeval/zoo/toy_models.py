"""The base model and its two specialists (zoo-recipe.md): recipes and builders.

The base learns generic toy language plus the *easy* forms of both skills, so it knows both
answer formats; each specialist starts from the base and learns one *hard* skill with replay
of the base mixture, so that merging the two gives a model that does both.

Each specialist trains its own part of the network: spec_add the MLPs (addition is a lookup),
spec_rev the attention layers (reversal is moving tokens). In a model of 283k parameters two
task vectors over all weights interfere: on a CPU with AVX-512 kernels, seed 0 of the recipe
that trained everything gave merges that kept a quarter of the reversal skill and lost to
spec_rev (BENCHMARKS.md). In the large models people merge, task vectors are close to
orthogonal; disjoint parameter groups are how this tiny world gets the same property, so the
demo's story does not hang on one CPU's rounding.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Callable

import torch

from mergeval.zoo import toy_tasks as tasks
from mergeval.zoo.model_files import load_model, save_model
from mergeval.zoo.training import Schedule, lm_step_loss, make_model, train
from mergeval.zoo.vocab import ZOO_CHAT_TEMPLATE, ZOO_VOCAB, Codec, make_tokenizer

VERSION = 2  # bump when a change to the code changes the weights it trains (2: parameter groups)
LAYERS = 4  # 4 layers: franken-merges (layer slices) have something to slice
MAX_POSITIONS = 64  # the longest zoo sequence is ~20 tokens
MAX_NEW_TOKENS = 16  # a hard rev answer is 6 letters + </s>

FULL = {
    # base: both answer formats, generic language; high lr, full-sequence loss
    "base": Schedule(steps=1500, batch=64, lr=3e-3, warmup=100, weight_decay=0.01, loss="full"),
    # specialists: answer-only loss, each on its own parameter group (SPECIALISTS); trained on
    # all weights, 1e-3 made deltas too big to merge, and 400 steps left spec_rev at 0.65 here
    "spec": Schedule(steps=800, batch=64, lr=1e-3, warmup=30, loss="target"),
}
QUICK = {  # for tests: real and loadable, not good
    "base": Schedule(steps=120, batch=32, lr=3e-3, warmup=10, weight_decay=0.01, loss="full"),
    "spec": Schedule(steps=30, batch=32, lr=5e-4, warmup=3, loss="target"),
}
SPECIALISTS = {"spec_add": "add", "spec_rev": "rev"}
TRAINED_PART = {"spec_add": "mlp.", "spec_rev": "self_attn."}  # the weights each specialist may change


def torch_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:4], "big")


def zoo_recipe(quick: bool) -> dict:
    """Everything that decides the zoo models' weights, apart from the seed."""
    sched = QUICK if quick else FULL
    return {
        "version": VERSION,
        "vocab": ZOO_VOCAB,
        "layers": LAYERS,
        "max_positions": MAX_POSITIONS,
        "split_seed": tasks.SPLIT_SEED,
        "schedules": {k: v.as_dict() for k, v in sched.items()},
        "trained_parts": TRAINED_PART,
    }


def _tokenizer():
    return make_tokenizer(ZOO_VOCAB, ZOO_CHAT_TEMPLATE)


def build_base(path: Path, *, seed: int, quick: bool, log: Callable[[str], None]) -> dict:
    schedule = (QUICK if quick else FULL)["base"]
    codec = Codec(ZOO_VOCAB)
    torch.manual_seed(torch_seed(seed, "base"))
    model = make_model(codec, layers=LAYERS, max_positions=MAX_POSITIONS)
    rng = random.Random(f"{seed}/base/data")
    model.train()
    loss = train(list(model.parameters()), schedule, lm_step_loss(model, codec, tasks.sample_base, rng, schedule),
                 name="base", log=log)
    save_model(path, model, _tokenizer(), codec, max_new_tokens=MAX_NEW_TOKENS)
    return {"final_loss": round(loss, 4), "schedule": schedule.as_dict()}


def build_specialist(path: Path, *, name: str, base: Path, seed: int, quick: bool,
                     log: Callable[[str], None]) -> dict:
    skill = SPECIALISTS[name]
    schedule = (QUICK if quick else FULL)["spec"]
    codec = Codec(ZOO_VOCAB)
    torch.manual_seed(torch_seed(seed, name))
    model = load_model(base)
    part = TRAINED_PART[name]
    trained = [p for k, p in model.named_parameters() if part in k]
    for k, p in model.named_parameters():
        p.requires_grad_(part in k)  # the rest stays the base's, bit for bit
    rng = random.Random(f"{seed}/{name}/data")
    model.train()
    loss = train(trained, schedule,
                 lm_step_loss(model, codec, tasks.spec_sampler(skill), rng, schedule), name=name, log=log)
    start = load_model(base).state_dict()
    num = sum((p - start[k]).norm() ** 2 for k, p in model.state_dict().items()) ** 0.5
    den = sum(p.norm() ** 2 for p in start.values()) ** 0.5
    save_model(path, model, _tokenizer(), codec, max_new_tokens=MAX_NEW_TOKENS)
    return {"final_loss": round(loss, 4), "schedule": schedule.as_dict(), "skill": skill, "trained": part,
            "relative_weight_change": round(float(num / den), 4)}
