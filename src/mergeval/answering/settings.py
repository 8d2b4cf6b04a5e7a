"""How a model under test is asked to answer: one frozen record, below the stage and the backends.

    from mergeval.answering.settings import GenerationSettings
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mergeval.core.hashing import content_hash


@dataclass(frozen=True)
class GenerationSettings:
    # Longest answer, for items whose suite (items/<suite>/suite.yaml) and front matter do not
    # say: a real answer (a paragraph, a 250-word scene) needs hundreds. The toy suite says 64.
    max_new_tokens: int = 512
    temperature: float = 0.0  # greedy by default: a ranking should not move between runs
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    backend: str = "transformers"  # transformers, vllm or openai (see answer_backends.py)
    device: str = "auto"  # "auto": cuda when available, else cpu
    endpoint: str | None = None  # openai: the server's base URL, e.g. http://127.0.0.1:8000/v1
    # openai: the model name sent to the server, per model under test: {name} = the model as the
    # ranking names it (vLLM's --served-model-name), {path} = its folder. None: the folder's path,
    # which `transformers serve` loads; set it for a server that knows its models by name.
    served_model: str | None = None

    def fingerprint(self) -> str:
        # batch size, device and endpoint do not change greedy outputs' meaning: keep them out
        d = asdict(self)
        for where in ("batch_size", "device", "endpoint"):
            d.pop(where)
        if d["served_model"] is None:  # absent unless set: the keys made before it stay valid
            d.pop("served_model")
        return content_hash(d)

    def for_model(self, name: str, path) -> "GenerationSettings":
        """These settings for one model under test: the served name filled in (openai)."""
        if self.backend != "openai":
            return self
        template = self.served_model or "{path}"
        return replace(self, served_model=template.format(name=name, path=str(Path(path).resolve())))

    def tokens_for(self, item_max_new_tokens: int | None) -> int:
        """The answer length used for an item: its own (front matter or suite.yaml), else ours."""
        return item_max_new_tokens or self.max_new_tokens
