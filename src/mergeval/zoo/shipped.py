"""The demo zoo as shipped: trained once, committed, and checked against its manifest.

    mergeval zoo            # zoo/ matches zoo/MANIFEST.json: nothing to train, nothing to wait for
    mergeval zoo --train    # train it again from scratch here, and write a new manifest

Why ship it: training is deterministic on one machine but not across CPUs (torch picks SIMD
kernels per CPU; 1,500 training steps amplify their rounding differences), so a zoo trained on
another box is another zoo, and the demo's story (which merge beats its parents) could change
with it. The manifest lists the sha256 of every file, so a damaged or edited zoo is noticed
before a sweep ranks it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

MANIFEST = "MANIFEST.json"
MODELS = ("base", "spec_add", "spec_rev", "proctora")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def zoo_files(zoo: Path) -> list[Path]:
    """Every file of the zoo's models, in a stable order (the manifest itself excluded)."""
    return sorted(p for name in MODELS if (zoo / name).is_dir() for p in (zoo / name).rglob("*") if p.is_file())


def write_manifest(zoo: Path, seed: int) -> Path:
    import torch

    files = {str(p.relative_to(zoo)): _sha256(p) for p in zoo_files(zoo)}
    meta = {"seed": seed, "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, torch {torch.__version__}, CPU kernels "
                       f"{torch.backends.cpu.get_cpu_capability()}", "files": files}
    path = zoo / MANIFEST
    path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def has_manifest(zoo: Path) -> bool:
    return (zoo / MANIFEST).is_file()


def differences(zoo: Path) -> list[str]:
    """What does not match the manifest: missing, changed or unlisted files (empty: all match)."""
    listed = json.loads((zoo / MANIFEST).read_text(encoding="utf-8"))["files"]
    present = {str(p.relative_to(zoo)): p for p in zoo_files(zoo)}
    problems = [f"{zoo / name}: missing" for name in sorted(set(listed) - set(present))]
    problems += [f"{zoo / name}: not in {MANIFEST}" for name in sorted(set(present) - set(listed))]
    problems += [f"{zoo / name}: its sha256 differs from {MANIFEST}" for name in sorted(set(listed) & set(present))
                 if _sha256(present[name]) != listed[name]]
    return problems
