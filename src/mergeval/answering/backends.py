"""How the model under test answers: the backends, by GenerationSettings.backend.

    transformers  in-process Hugging Face model (the default; transformers_backend.py)
    vllm          in-process vLLM on a GPU: `pip install 'mergeval[vllm]'`, used when installed
                  and CUDA is present, else check() says why not (vllm_backend.py)
    openai        a model already served elsewhere (vLLM, llama.cpp, `transformers serve`, …):
                  GenerationSettings(backend="openai", endpoint="http://127.0.0.1:8000/v1");
                  the key, if any, comes from MERGEVAL_ANSWER_API_KEY (openai_backend.py)

Every backend is a class built as `Backend(model_dir, settings, trust_remote_code)` (True only for
a model the user named, see inputs/remote_code.py): a context manager whose answer(items, todo)
yields (items, texts, usage) per batch, usage = {prompt_tokens, completion_tokens, seconds,
chat_fold}: the outputs contract of stage.py (chat_fold: None, or how the item's messages were
folded to fit the model's chat template and why, see chat.py). The registry names modules, not classes, so that choosing a
backend imports only that backend's libraries (torch, vllm or httpx).
The backend is part of the answers' cache key (numerics differ), with what changes its answers
(settings.py LOCAL_KEYS: device, dtype, batch size in-process); the endpoint is not.
"""

from __future__ import annotations

import importlib
import importlib.util

from mergeval.answering.settings import DTYPES, GenerationSettings

BACKENDS = {  # name → (module, class)
    "transformers": ("mergeval.answering.transformers_backend", "TransformersBackend"),
    "vllm": ("mergeval.answering.vllm_backend", "VLLMBackend"),
    "openai": ("mergeval.answering.openai_backend", "OpenAIBackend"),
}


def load(backend: str):
    """The class of `backend` (its module is imported now, not before)."""
    module, name = BACKENDS[backend]
    return getattr(importlib.import_module(module), name)


def check(settings: GenerationSettings) -> None:
    """Raise ValueError saying what to fix, before any model is built or answered."""
    if settings.backend not in BACKENDS:
        *first, last = BACKENDS
        raise ValueError(f"answering backend must be {', '.join(first)} or {last}, not {settings.backend!r}")
    if settings.dtype not in DTYPES:
        *first, last = DTYPES
        raise ValueError(f"the answering dtype must be {', '.join(first)} or {last}, not {settings.dtype!r}")
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
