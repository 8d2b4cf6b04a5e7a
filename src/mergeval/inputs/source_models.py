"""Source models as validation sees them: where a reference points, and what its config says.

    info = model_info(Path("zoo/base"))    # ModelInfo(arch="LlamaForCausalLM", layers={"default": 4}, ...)

A reference is a local model folder, or a hub id already in the local Hugging Face cache:
nothing is ever downloaded while validating.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """What validation needs from a source model's config.json."""

    arch: str | None
    model_type: str | None
    hidden_size: int | None
    vocab_size: int | None
    layers: dict[str, int | None]  # mergekit module name ("default" for plain LMs) -> layers


def looks_like_hub_id(raw: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", raw) is not None


def hub_cache(raw: str, revision: str | None) -> Path | None:
    """The snapshot folder of a hub model already in the local cache, else None."""
    if not looks_like_hub_id(raw):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(raw, "config.json", revision=revision)
    except Exception:  # an odd id the hub library rejects is simply not cached
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def hub_snapshot_id(path: Path) -> tuple[str, str, bool] | None:
    """(hub id, commit, whether refs/main points at it) for a snapshot folder of a Hugging Face
    cache (models--org--name/snapshots/<commit>), else None."""
    snapshots = path.parent
    repo = snapshots.parent
    if snapshots.name != "snapshots" or not repo.name.startswith("models--") or repo.name.count("--") < 2:
        return None
    hub_id = repo.name.removeprefix("models--").replace("--", "/", 1)
    try:
        main = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        main = None
    return hub_id, path.name, main == path.name


def source_name(workspace, raw: str, revision: str | None, path: Path) -> str | None:
    """The name people know a source model by, where it has one beyond its folder's: the hub id
    as the recipe wrote it (plus `@revision` when the recipe pins one), also for a snapshot
    folder named by its path (`@commit` unless it is the cache's main). None: a plain folder."""
    snap = hub_snapshot_id(path)
    if snap is None:
        return None
    hub_id, commit, is_main = snap
    if looks_like_hub_id(raw) and raw == hub_id and not workspace.resolve(raw).is_dir():
        return f"{raw}@{revision}" if revision else raw
    return hub_id if is_main else f"{hub_id}@{commit}"


def locate(workspace, raw: str, revision: str | None) -> tuple[Path | None, str | None]:
    """(the model folder, None) or (None, why not) for a reference as written in a recipe."""
    try:  # a NUL byte or a 300-character folder name makes the OS refuse the path itself
        if "\0" in raw:
            raise ValueError("it holds a NUL byte")
        p = workspace.resolve(raw)
        p.is_dir()
    except (OSError, ValueError) as e:
        return None, f"source model {raw!r}: not a usable path ({e})"
    if p.is_dir():
        if (p / "config.json").is_file():
            return p.resolve(), None
        return None, f"source model {raw!r}: the folder {p} has no config.json (not a Hugging Face model folder)"
    if p.exists():
        return None, f"source model {raw!r}: {p} is a file, not a model folder"
    cached = hub_cache(raw, revision)
    if cached is not None:
        return cached, None
    hub = looks_like_hub_id(raw)
    return None, (f"source model {raw!r} not found: no folder {p}"
                  + (f", and hub model {raw} is not in the local Hugging Face cache "
                     "(mergeval does not download during validation; download it first)" if hub else ""))


def model_info(path: Path) -> ModelInfo:
    """Architecture, sizes and layer counts from config.json, the way mergekit reads them."""
    from mergekit.architecture.json_definitions import NAME_TO_ARCH

    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError("config.json is not a JSON object")
    archs = cfg.get("architectures") or [None]
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}

    def get(dotted: str) -> Any:
        for root in (cfg, text):
            obj = root
            for part in dotted.split("."):
                obj = obj.get(part) if isinstance(obj, dict) else None
            if obj is not None:
                return obj
        return None

    layers: dict[str, int | None] = {"default": get("num_hidden_layers")}
    vocab_key = "vocab_size"
    candidates = NAME_TO_ARCH.get(archs[0]) or []
    arch = next((c for c in candidates if c.expected_model_type == cfg.get("model_type")),
                candidates[0] if candidates else None)
    if arch is not None:
        layers = {}
        for name, module in arch.modules.items():
            key = module.architecture.num_layers_config_key()
            layers[name] = get(key) if key else None
        vocab_key = getattr(arch, "vocab_size_config_key", None) or vocab_key
    return ModelInfo(archs[0], cfg.get("model_type"), get("hidden_size"), get(vocab_key), layers)
