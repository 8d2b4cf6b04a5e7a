"""Models on disk: fingerprints that identify a model directory by its content.

A fingerprint hashes config.json and, per weight file, its name, size, header and a sample of
its bytes (all of it for small files). That is cheap on a 70B model yet changes when the
weights are retrained with the same shapes, which a header-only hash would miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mergeval.core.hashing import content_hash

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
SMALL_FILE = 64 << 20  # files up to 64 MiB are hashed whole
SAMPLES = 16  # evenly spaced 64 KiB windows for larger files
WINDOW = 64 << 10


def _sample_hash(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= SMALL_FILE:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            for k in range(SAMPLES):
                f.seek(k * (size - WINDOW) // (SAMPLES - 1))
                h.update(f.read(WINDOW))
    return h.hexdigest()


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def fingerprint(model_dir: Path) -> str:
    """Content fingerprint of a Hugging Face model directory (config + weights)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = [
        {"name": p.name, "size": p.stat().st_size, "sample": _sample_hash(p)}
        for p in weight_files(model_dir)
    ]
    return content_hash({"config": config, "weights": weights})


def weights_size(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(model_dir))


def num_layers(model_dir: Path) -> int | None:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    config = config.get("text_config", config)
    return config.get("num_hidden_layers")


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                     "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


def tensor_sizes(model_dir: Path) -> dict[str, tuple[int, int]] | None:
    """Tensor name → (elements, bytes per element) from the safetensors headers (only the
    headers are read); None when the weights are not all safetensors."""
    files = weight_files(model_dir)
    if not files or any(p.suffix != ".safetensors" for p in files):
        return None
    out: dict[str, tuple[int, int]] = {}
    for p in files:
        with open(p, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, meta in header.items():
            if name != "__metadata__":
                n = 1
                for d in meta["shape"]:
                    n *= d
                out[name] = (n, SAFETENSORS_BYTES.get(meta["dtype"], 4))
    return out
