"""The judge backends, by the name written as `backend:` in judge/proctora.yaml.

A plain dictionary: to add a backend, write a class with check_alive / complete / close
(see backend_base.Backend) and add it here. Neither module imports torch until it is used.
"""

from __future__ import annotations

from mergeval.proctora.backend_base import Backend, Completion, JudgeUnavailable
from mergeval.proctora.backend_openai import OpenAIBackend
from mergeval.proctora.backend_transformers import TransformersBackend

BACKENDS: dict[str, type] = {
    "transformers": TransformersBackend,  # in-process Hugging Face model (the embedded default)
    "openai": OpenAIBackend,  # any OpenAI-compatible chat server
}

__all__ = ["BACKENDS", "Backend", "Completion", "JudgeUnavailable"]
