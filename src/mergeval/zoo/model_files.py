"""Writing a zoo model directory so that a killed run never leaves one that looks finished.

A model is built in a temporary sibling directory; `zoo.json` (its recipe hash and seed) is
written last, and only then is the directory renamed into place. A directory whose zoo.json
names the same recipe and seed is reused as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from transformers import GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mergeval.zoo.vocab import Codec

MARKER = "zoo.json"


def finished(path: Path, recipe: str, seed: int) -> bool:
    try:
        meta = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("recipe") == recipe and meta.get("seed") == seed


def ensure(
    out: Path,
    name: str,
    *,
    recipe: str,
    seed: int,
    build: Callable[[Path], dict],
    log: Callable[[str], None],
) -> Path:
    """out/name for this recipe and seed: reused if finished, else built by `build(tmp_dir)`."""
    final = out / name
    if finished(final, recipe, seed):
        log(f"{name}: skipped (already built for recipe {recipe[:12]}, seed {seed})")
        return final
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f".{name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    start = time.time()
    try:
        extra = build(tmp)
        meta = {"model": name, "recipe": recipe, "seed": seed, "seconds": round(time.time() - start, 1), **extra}
        # The marker is written last: a directory without it was never finished.
        (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{name}: built in {time.time() - start:.0f} s -> {final}")
    return final


def save_model(
    path: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    codec: Codec,
    *,
    max_new_tokens: int,
) -> None:
    model.generation_config = GenerationConfig(
        bos_token_id=codec.bos,
        eos_token_id=codec.eos,
        pad_token_id=codec.pad,
        do_sample=False,
        max_new_tokens=max_new_tokens,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def load_model(path: Path) -> LlamaForCausalLM:
    model = LlamaForCausalLM.from_pretrained(path)
    model.eval()
    return model
