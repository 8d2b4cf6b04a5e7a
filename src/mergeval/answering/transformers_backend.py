"""Batched generation with transformers: left padding, length-sorted batches, greedy default.

The model's chat template is used when it has one (system prompt and earlier turns from the
item); otherwise a plain prompt. One model is loaded at a time and released on exit.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mergeval.answering.messages import messages_for, plain_prompt
from mergeval.answering.settings import GenerationSettings
from mergeval.core.memory import release_accelerator_memory
from mergeval.inputs.items import Item


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersBackend:
    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        self.settings = settings
        self.device = pick_device(settings.device)
        # trust_remote_code: only for a model the user named (remote_code.py); False never runs
        # the Python in the model's folder
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.float32 if self.device == "cpu" else "auto"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code).to(self.device)
        self.model.eval()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        del self.model
        release_accelerator_memory()

    def prompt_text(self, item: Item) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages_for(item), add_generation_prompt=True, tokenize=False
            )
        return plain_prompt(item)

    def answer(self, items: list[Item], todo: set[str]):
        """Yield (items, answers, usage) per batch for the items whose id is in `todo`.

        Batches are cut from *all* items in length order, longest first, and each batch is
        saved whole, so a resumed stage forms exactly the batches an uninterrupted one would
        (left padding can move greedy outputs by a rounding error otherwise).
        """
        prompts = {it.id: self.prompt_text(it) for it in items}
        lengths = {k: len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for k, p in prompts.items()}
        ordered = sorted(items, key=lambda it: (-lengths[it.id], it.id))
        size = self.settings.batch_size
        batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        for batch in batches:
            wanted = [it for it in batch if it.id in todo]
            if wanted:
                yield from self._generate_halving([prompts[it.id] for it in wanted], wanted)

    def _generate_halving(self, prompts: list[str], items: list[Item]):
        """Generate a batch; on out-of-memory, halve it and retry, down to one item."""
        try:
            texts, usage = self._generate(prompts)
        except torch.OutOfMemoryError:
            if len(items) == 1:
                raise
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(items) // 2
            yield from self._generate_halving(prompts[:half], items[:half])
            yield from self._generate_halving(prompts[half:], items[half:])
            return
        yield items, texts, usage

    @torch.inference_mode()
    def _generate(self, prompts: list[str]) -> tuple[list[str], list[dict]]:
        s = self.settings
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = s.temperature > 0
        if sampling:
            torch.manual_seed(s.seed)
        started = time.perf_counter()
        out = self.model.generate(
            **enc,
            max_new_tokens=s.max_new_tokens,
            do_sample=sampling,
            temperature=s.temperature if sampling else None,
            top_p=s.top_p if sampling else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        seconds = (time.perf_counter() - started) / len(prompts)
        new = out[:, enc["input_ids"].shape[1] :]
        texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        pad = self.tokenizer.pad_token_id
        usage = [
            {
                "prompt_tokens": int(mask.sum()),
                "completion_tokens": int((row != pad).sum()),
                "seconds": round(seconds, 4),
            }
            for mask, row in zip(enc["attention_mask"], new)
        ]
        return texts, usage
