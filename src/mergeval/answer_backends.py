"""How the model under test answers: the backends, by GenerationSettings.backend.

    transformers  in-process Hugging Face model (the default; generate.py)
    vllm          in-process vLLM on a GPU: `pip install 'mergeval[vllm]'`, used when installed
                  and CUDA is present, else check() says why not
    openai        a model already served elsewhere (vLLM, llama.cpp, `transformers serve`, …):
                  GenerationSettings(backend="openai", endpoint="http://127.0.0.1:8000/v1");
                  the request's `model` is the model directory's absolute path (what
                  `transformers serve` loads and `vllm serve PATH` names its model), and the
                  key, if any, comes from MERGEVAL_ANSWER_API_KEY

Every backend is built as Backend(model_dir, settings, trust_remote_code) (True only for a model
the user named, see remote_code.py) and is a context manager whose answer(items, todo) yields (items, texts, usage) per
batch, usage = {prompt_tokens, completion_tokens, seconds}: the outputs contract of answer.py.
The backend is part of the answers' cache key (numerics differ); the endpoint is not.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .answer import GenerationSettings
from .items import Item

API_KEY_ENV = "MERGEVAL_ANSWER_API_KEY"
HTTP_RETRIES = 3  # connection errors and 5xx, with back-off; a 4xx is a mistake, not retried


def generator(backend: str):
    if backend == "transformers":
        from .generate import Generator

        return Generator
    return {"openai": OpenAIGenerator, "vllm": VLLMGenerator}[backend]


def check(settings: GenerationSettings) -> None:
    """Raise ValueError saying what to fix, before any model is built or answered."""
    if settings.backend not in ("transformers", "openai", "vllm"):
        raise ValueError(f"answering backend must be transformers, vllm or openai, not {settings.backend!r}")
    if settings.backend == "openai" and not settings.endpoint:
        raise ValueError("the openai answering backend needs an endpoint (e.g. http://127.0.0.1:8000/v1)")
    if settings.backend == "vllm":
        why = vllm_missing()
        if why:
            raise ValueError(f"the vllm answering backend cannot run here: {why}")


def vllm_missing() -> str | None:
    """Why vLLM cannot answer on this machine, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'mergeval[vllm]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def _chunks(items: list[Item], todo: set[str], size: int):
    wanted = [it for it in items if it.id in todo]
    for i in range(0, len(wanted), size):
        yield wanted[i : i + size]


class OpenAIGenerator:
    """Chat completions against an OpenAI-compatible server, batch_size requests in flight.

    The server applies the model's chat template (the model needs one). Greedy unless the
    settings sample; the seed is sent for servers that honour it.
    """

    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        import httpx  # trust_remote_code is the server's business: nothing is loaded here

        self.settings = settings
        self.model = str(Path(model_dir).resolve())
        key = os.environ.get(API_KEY_ENV)
        self.client = httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0),
                                   headers={"Authorization": f"Bearer {key}"} if key else {})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.client.close()

    def answer(self, items: list[Item], todo: set[str]):
        from .generate import messages_for

        size = max(1, self.settings.batch_size)
        with ThreadPoolExecutor(max_workers=size) as pool:
            for batch in _chunks(items, todo, size):
                replies = list(pool.map(lambda it: self._one(messages_for(it)), batch))
                yield batch, [t for t, _ in replies], [u for _, u in replies]

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


class VLLMGenerator:
    """vLLM's offline engine on this machine's GPU; it batches internally, so a batch here is
    only how often answers are saved."""

    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        from vllm import LLM  # optional extra: check() ran before any model was loaded

        self.settings = settings
        self.llm = LLM(model=str(model_dir), seed=settings.seed, gpu_memory_utilization=0.85,
                       trust_remote_code=trust_remote_code)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        import torch

        del self.llm
        gc.collect()
        torch.cuda.empty_cache()

    def answer(self, items: list[Item], todo: set[str]):
        from vllm import SamplingParams

        from .generate import messages_for

        s = self.settings
        params = SamplingParams(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
        for batch in _chunks(items, todo, max(s.batch_size, 64)):
            started = time.perf_counter()
            outs = self.llm.chat([messages_for(it) for it in batch], params, use_tqdm=False)
            seconds = (time.perf_counter() - started) / len(batch)
            yield batch, [o.outputs[0].text.strip() for o in outs], [
                {"prompt_tokens": len(o.prompt_token_ids), "completion_tokens": len(o.outputs[0].token_ids),
                 "seconds": round(seconds, 4)} for o in outs]
