"""How a model under test is asked to answer: one frozen record, below the stage and the backends.

    from mergeval.answering.settings import GenerationSettings
    GenerationSettings(dtype="bfloat16").fingerprint()    # the answers' cache key part

The fingerprint holds everything that can change an answer. Greedy decoding is not the same
on every device and dtype (bfloat16 on a GPU and float32 on a CPU pick other tokens), and
left padding makes a batch's make-up matter too: so for the in-process transformers backend
the device, the dtype and the batch size are keyed, each as it will really be ("auto" is
resolved here, on this machine). A served model (openai) runs wherever its server runs: only
the sampling settings are keyed. vLLM batches on its own; its dtype is keyed.
Changing what is keyed invalidates saved answers once; KEY_VERSION says which keying made them.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from mergeval.core.hashing import content_hash

DTYPES = ("auto", "float32", "bfloat16", "float16")
KEY_VERSION = 2  # 2: device, dtype and batch size keyed; the prompt has one BOS; refusals folded
LOCAL_KEYS = {  # per backend, the settings beside sampling that change its answers
    "transformers": ("device", "dtype", "batch_size"),
    "vllm": ("dtype",),
    "openai": (),
}


@dataclass(frozen=True)
class GenerationSettings:
    # Longest answer, for items whose suite (items/<suite>/suite.yaml) and front matter do not
    # say: a real answer (a paragraph, a 250-word scene) needs hundreds. The toy suite says 64.
    max_new_tokens: int = 512
    temperature: float = 0.0  # greedy by default: a ranking should not move between runs
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    backend: str = "transformers"  # transformers, vllm or openai (see backends.py)
    device: str = "auto"  # "auto": cuda when available, else cpu
    endpoint: str | None = None  # openai: the server's base URL, e.g. http://127.0.0.1:8000/v1
    dtype: str = "auto"  # transformers: "auto" = float32 on a CPU, the checkpoint's dtype on a GPU
    # openai: the model name sent to the server, per model under test: {name} = the model as the
    # ranking names it (vLLM's --served-model-name), {path} = its folder. None: the folder's path,
    # which `transformers serve` loads; set it for a server that knows its models by name.
    served_model: str | None = None

    def fingerprint(self) -> str:
        d = asdict(self)
        for name in ("batch_size", "device", "endpoint", "dtype"):
            d.pop(name)
        if d["served_model"] is None:  # keyed only when set
            d.pop("served_model")
        keyed = LOCAL_KEYS.get(self.backend, ())
        if "device" in keyed:
            d["device"] = effective_device(self.device)
        if "dtype" in keyed:
            d["dtype"] = effective_dtype(self.dtype, effective_device(self.device) if "device" in keyed else "cuda")
        if "batch_size" in keyed:
            d["batch_size"] = self.batch_size
        return content_hash({"key_version": KEY_VERSION, **d})

    def for_model(self, name: str, path) -> "GenerationSettings":
        """These settings for one model under test: the served name filled in (openai)."""
        if self.backend != "openai":
            return self
        template = self.served_model or "{path}"
        return replace(self, served_model=template.format(name=name, path=str(Path(path).resolve())))

    def one_served_name(self) -> bool:
        """openai with a served name that is the same for every model (no {name} or {path} in it):
        every model under test would be answered by that one served model."""
        if self.backend != "openai" or not self.served_model:
            return False
        return self.served_model.format(name="a", path="/a") == self.served_model.format(name="b", path="/b")

    def tokens_for(self, item_max_new_tokens: int | None) -> int:
        """The answer length used for an item: its own (front matter or suite.yaml), else ours."""
        return item_max_new_tokens or self.max_new_tokens

def effective_dtype(dtype: str, device: str) -> str:
    """"auto" as the transformers backend loads it: float32 on a CPU (bfloat16 matmuls there are
    slow and differ), else the checkpoint's own dtype ("auto": the model's key covers config.json)."""
    if dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "auto"


def effective_device(requested: str) -> str:
    """The device "auto" means on this machine: cuda when torch sees a GPU, else cpu."""
    return requested if requested != "auto" else _auto_device()


@lru_cache(maxsize=1)
def _auto_device() -> str:
    # A torch built without CUDA or ROCm (its version.py says so) never sees a GPU: answered
    # without importing torch (~3 s), so planning a re-run on a CPU box stays quick.
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "cpu"
    version = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if all(re.search(rf"^{name}\s*(:[^=]*)?=\s*None\s*$", text, re.M) for name in ("cuda", "hip")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
