"""Answering through a model already served elsewhere: any OpenAI-compatible chat server
(vLLM, llama.cpp, `transformers serve`, …), batch_size requests in flight."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mergeval.answering.chat import fitted, local_tokenizer
from mergeval.answering.messages import messages_for, todo_batches
from mergeval.answering.settings import GenerationSettings
from mergeval.inputs.items import Item

API_KEY_ENV = "MERGEVAL_ANSWER_API_KEY"
HTTP_RETRIES = 3  # connection errors and 5xx, with back-off; a 4xx is a mistake, not retried


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible server, batch_size requests in flight.

    The server applies the model's chat template (the model needs one). Greedy unless the
    settings sample; the seed is sent for servers that honour it.
    """

    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        import httpx  # trust_remote_code is the server's business: nothing is loaded here

        self.settings = settings
        # the served name (settings.for_model filled it in); the folder's path as a last resort
        self.model = settings.served_model or str(Path(model_dir).resolve())
        # The server applies the model's template: refusals are folded here first, from the
        # model folder's own tokenizer.
        self.tokenizer = local_tokenizer(str(model_dir)) if Path(model_dir).is_dir() else None
        key = os.environ.get(API_KEY_ENV)
        self.client = httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0),
                                   headers={"Authorization": f"Bearer {key}"} if key else {})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def answer(self, items: list[Item], todo: set[str]):
        size = max(1, self.settings.batch_size)
        with ThreadPoolExecutor(max_workers=size) as pool:
            for batch in todo_batches(items, todo, size):
                fits = [fitted(self.tokenizer, messages_for(it)) for it in batch]
                replies = list(pool.map(lambda fit: self._one(fit[0]), fits))
                yield batch, [t for t, _ in replies], [{**u, "chat_fold": fold} for (_, u), (_, fold) in zip(replies, fits)]

    def _one(self, messages: list[dict]) -> tuple[str, dict]:
        import httpx

        s = self.settings
        body = {"model": self.model, "messages": messages, "max_tokens": s.max_new_tokens,
                "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
        url = f"{s.endpoint.rstrip('/')}/chat/completions"
        for attempt in range(HTTP_RETRIES + 1):
            started = time.perf_counter()
            try:
                r = self.client.post(url, json=body)
            except httpx.TransportError:
                if attempt == HTTP_RETRIES:
                    raise
            else:
                if r.status_code < 500 or attempt == HTTP_RETRIES:
                    break
            time.sleep(0.5 * 2**attempt)
        r.raise_for_status()  # a 4xx (unknown model, no chat template) or the last 5xx: the stage fails
        reply = r.json()
        usage = reply.get("usage") or {}
        return (reply["choices"][0]["message"].get("content") or "").strip(), {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "seconds": round(time.perf_counter() - started, 4),
        }
