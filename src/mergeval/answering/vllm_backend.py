"""Answering with vLLM's offline engine on this machine's GPU (`pip install 'mergeval[vllm]'`)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from mergeval.answering.chat import fitted
from mergeval.answering.messages import messages_for, todo_batches
from mergeval.answering.settings import GenerationSettings
from mergeval.inputs.items import Item


class VLLMBackend:
    """vLLM's offline engine on this machine's GPU; it batches internally, so a batch here is
    only how often answers are saved."""

    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        from vllm import LLM  # optional extra: check() ran before any model was loaded

        self.settings = settings
        self.llm = LLM(model=str(model_dir), seed=settings.seed, gpu_memory_utilization=0.85,
                       trust_remote_code=trust_remote_code, dtype=settings.dtype)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import torch

        del self.llm
        gc.collect()
        torch.cuda.empty_cache()

    def answer(self, items: list[Item], todo: set[str]):
        from vllm import SamplingParams

        s = self.settings
        params = SamplingParams(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        tokenizer = self.llm.get_tokenizer()
        for batch in todo_batches(items, todo, max(s.batch_size, 64)):
            started = time.perf_counter()
            fits = [fitted(tokenizer, messages_for(it)) for it in batch]  # refusals folded (chat.py)
            outs = self.llm.chat([m for m, _ in fits], params, use_tqdm=False)
            seconds = (time.perf_counter() - started) / len(batch)
            yield batch, [o.outputs[0].text.strip() for o in outs], [
                {"prompt_tokens": len(o.prompt_token_ids), "completion_tokens": len(o.outputs[0].token_ids),
                 "seconds": round(seconds, 4), "chat_fold": fold} for o, (_, fold) in zip(outs, fits)]
