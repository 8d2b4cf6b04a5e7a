"""A small workspace for the hostile-input tests: source models as bare config.json folders.

Validation reads only a source model's config.json, so the three "models" here cost nothing
to make; a sweep on bad input must stop before it would need more than that.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.sweep_helpers import copy_toy_judge

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).resolve().parent / "hostile"

LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
    "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
    "num_hidden_layers": 4, "vocab_size": 64,
}


def make_world(root: Path) -> Path:
    """root/ws: zoo/{base,spec_add,spec_rev}/config.json, judge/ (the repository's), empty folders
    merge_configs/mine and items/mine for the case under test; root/outside: a folder beside it."""
    ws = root / "ws"
    for name in ("base", "spec_add", "spec_rev"):
        (ws / "zoo" / name).mkdir(parents=True)
        (ws / "zoo" / name / "config.json").write_text(json.dumps(LLAMA))
    copy_toy_judge(ws / "judge")
    (ws / "merge_configs" / "mine").mkdir(parents=True)
    (ws / "items" / "mine").mkdir(parents=True)
    (root / "outside").mkdir()
    return ws


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path below root (links not followed) with its type, size and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out
