"""How a model under test is asked to answer: one frozen record, below the stage and the backends.

    from mergeval.answering.settings import GenerationSettings
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mergeval.core.hashing import content_hash


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64  # the toy items need a handful; raise it for real models
    temperature: float = 0.0  # greedy by default: a ranking should not move between runs
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    backend: str = "transformers"  # transformers, vllm or openai (see answer_backends.py)
    device: str = "auto"  # "auto": cuda when available, else cpu
    endpoint: str | None = None  # openai: the server's base URL, e.g. http://127.0.0.1:8000/v1

    def fingerprint(self) -> str:
        # batch size, device and endpoint do not change greedy outputs' meaning: keep them out
        d = asdict(self)
        for where in ("batch_size", "device", "endpoint"):
            d.pop(where)
        return content_hash(d)
