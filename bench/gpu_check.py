"""The GPU paths, checked in a few minutes on a box that has one (figures → BENCHMARKS.md).

    .venv/bin/python bench/gpu_check.py                 # the shipped toy zoo, cuda:0
    .venv/bin/python bench/gpu_check.py --out /tmp/gpu.json

1. batched transformers answering on the GPU: batch 1 vs batch 32, answers per second, and
   whether the answers equal the CPU's (greedy; they may differ in a few tokens in bfloat16)
2. one merge (ties, the toy recipe) built with mergekit on the GPU vs on the CPU, seconds

Without a CUDA GPU it says so and exits 0: nothing here is faked on a CPU. It does not check
the vLLM backend (answering/vllm_backend.py), which has never run: the machines this project
is built and tested on have neither a GPU nor vLLM. It prints whether vLLM could run here.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args()
    import torch

    from mergeval.answering.backends import vllm_missing

    vllm = vllm_missing()
    print(f"vLLM backend: not checked by this script, never run; here: {vllm or 'vllm and a GPU are present'}")
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to check here (run this on a GPU box)")
        return
    from mergeval.answering.settings import GenerationSettings
    from mergeval.answering.transformers_backend import TransformersBackend
    from mergeval.core.workspace import Workspace
    from mergeval.engine.build import build
    from mergeval.inputs.items import load_items
    from mergeval.inputs.recipes import load_recipe

    items = load_items(REPO / "items" / "toy")
    model = REPO / "zoo" / "spec_add"
    figures = {"gpu": torch.cuda.get_device_name(0), "machine": platform.machine(), "torch": torch.__version__,
               "vllm": "not checked (never run)" + (f"; here: {vllm}" if vllm else "")}
    answers = {}
    for device, size in (("cpu", 32), ("cuda", 1), ("cuda", 32)):
        with TransformersBackend(model, GenerationSettings(batch_size=size, device=device, max_new_tokens=16)) as gen:
            started = time.perf_counter()
            out = [t for _, texts, _ in gen.answer(items, {it.id for it in items}) for t in texts]
            figures[f"{device}_batch{size}_answers_per_s"] = round(len(items) / (time.perf_counter() - started), 1)
        answers[(device, size)] = out
    figures["batched_speedup_on_gpu"] = round(figures["cuda_batch32_answers_per_s"] / figures["cuda_batch1_answers_per_s"], 2)
    figures["gpu_answers_equal_cpu"] = sorted(answers[("cuda", 32)]) == sorted(answers[("cpu", 32)])

    with tempfile.TemporaryDirectory() as tmp:
        ws_root = Path(tmp) / "ws"
        (ws_root / "merge_configs").mkdir(parents=True)
        (ws_root / "zoo").symlink_to(REPO / "zoo")
        ws = Workspace(ws_root)
        recipe = load_recipe(REPO / "merge_configs" / "toy" / "ties_d08.yaml", ws)
        for device in ("cpu", "cuda"):
            built = build(recipe, ws, device=device, key=f"gpu-check-{device}")
            figures[f"ties_build_{device}_s"] = round(built.seconds, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
