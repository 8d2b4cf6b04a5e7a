"""Batched generation with transformers: left padding, length-sorted batches, greedy default.

The model's chat template is used when it has one (system prompt and earlier turns from the
item; a template that refuses the system role gets it folded into the first user turn, see
chat.py); otherwise a plain prompt. BOS is sent once, generation stops at every EOS id the
model declares. One model is loaded at a time and released on exit.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mergeval.answering.chat import encode_prompt, eos_ids, render_chat
from mergeval.answering.messages import messages_for, plain_prompt
from mergeval.answering.settings import GenerationSettings, effective_device, effective_dtype
from mergeval.core.memory import release_accelerator_memory
from mergeval.inputs.items import Item


def pick_device(requested: str) -> str:
    return effective_device(requested)  # the same answer the answers' cache key was made with


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
        dtype = effective_dtype(settings.dtype, self.device)
        dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code).to(self.device)
        self.model.eval()
        self.eos = eos_ids(self.tokenizer, self.model.generation_config)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        del self.model
        release_accelerator_memory()

    def prompt_text(self, item: Item) -> tuple[str, dict | None]:
        """The prompt, and how the item's messages were folded to fit the template (or None)."""
        if self.tokenizer.chat_template:
            return render_chat(self.tokenizer, messages_for(item))
        return plain_prompt(item), None

    def answer(self, items: list[Item], todo: set[str]):
        """Yield (items, answers, usage) per batch for the items whose id is in `todo`.

        Batches are cut from *all* items in length order, longest first, and each batch is
        saved whole, so a resumed stage forms exactly the batches an uninterrupted one would
        (left padding can move greedy outputs by a rounding error otherwise).
        """
        rendered = {it.id: self.prompt_text(it) for it in items}
        prompts = {k: encode_prompt(self.tokenizer, text) for k, (text, _) in rendered.items()}
        ordered = sorted(items, key=lambda it: (-len(prompts[it.id]), it.id))
        size = self.settings.batch_size
        batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        for batch in batches:
            wanted = [it for it in batch if it.id in todo]
            if wanted:
                for done, texts, usage in self._generate_halving([prompts[it.id] for it in wanted], wanted):
                    yield done, texts, [{**u, "chat_fold": rendered[it.id][1]} for it, u in zip(done, usage)]

    def _generate_halving(self, prompts: list[list[int]], items: list[Item]):
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
    def _generate(self, prompts: list[list[int]]) -> tuple[list[str], list[dict]]:
        s = self.settings
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = s.temperature > 0
        if sampling:
            torch.manual_seed(s.seed)
        started = time.perf_counter()
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=s.max_new_tokens,
            do_sample=sampling,
            temperature=s.temperature if sampling else None,
            top_p=s.top_p if sampling else None,
            top_k=None,
            pad_token_id=pad,
            eos_token_id=self.eos,
        )
        seconds = (time.perf_counter() - started) / len(prompts)
        texts, usage = [], []
        for p, row in zip(prompts, out[:, width:].tolist()):
            # the reply ends at its first EOS, whichever of the model's EOS ids it is
            new = row[: next((k for k, t in enumerate(row) if t in self.eos), len(row))]
            texts.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
            usage.append({"prompt_tokens": len(p), "completion_tokens": len(new), "seconds": round(seconds, 4)})
        return texts, usage
