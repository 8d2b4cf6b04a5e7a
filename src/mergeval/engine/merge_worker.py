"""One merge in its own process: `python -m mergeval.engine.merge_worker CONFIG.yaml OUT_DIR --seed N [--moe]`.

--moe: CONFIG is a mergekit-moe recipe, built by mergekit-moe's own `build` (the gates from the
base model's hidden states on the prompts, or from embeddings, or random, per gate_mode).

Run by the build stage in a process of its own (forked by merge_server.py from a process that
has only imported, or started with `python -m`), never in the build's own process: mergekit's
loader cache, random seed, thread count and logging are process-global, so a process no other
merge has touched is the only way to get a clean, repeatable merge (see shared/design/facts.md).
"""

from __future__ import annotations

import argparse
import os
import sys


def fix_layer_types(out_config, merge_config) -> None:
    """Rebuild `layer_types` for franken-merges (Qwen2/3, Gemma2/3 configs carry one).

    mergekit sets num_hidden_layers to the sum of the slices but leaves layer_types at the
    source's length, and transformers 5 then refuses to save the config. Each output layer
    keeps the attention type of the source layer it was cut from.
    """
    if not merge_config.slices or getattr(out_config, "layer_types", None) is None:
        return
    layer_types: list[str] = []
    for piece in merge_config.slices:
        source = piece.sources[0]
        start, end = source.layer_range
        source_types = getattr(source.model.config(), "layer_types", None)
        if source_types is None:
            source_types = list(out_config.layer_types)
        layer_types.extend(source_types[start:end])
    out_config.layer_types = layer_types
    out_config.num_hidden_layers = len(layer_types)


def _patch_out_config() -> None:
    import mergekit.merge as merge_module

    original = merge_module._model_out_config

    def patched(config, arch_info, trust_remote_code=False):
        res = original(config, arch_info, trust_remote_code=trust_remote_code)
        fix_layer_types(res, config)
        return res

    merge_module._model_out_config = patched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    # off unless the user named this merge and its sources (remote_code.py): mergekit then
    # imports the Python their config.json's auto_map points at
    parser.add_argument("--trust-remote-code", action="store_true")
    # engine/build.py MergeSettings: speed and memory, never the merged weights
    parser.add_argument("--lazy-unpickle", action="store_true")
    parser.add_argument("--low-cpu-memory", action="store_true")
    parser.add_argument("--shard-size", default=None, help='mergekit out_shard_size, e.g. "2B"')
    parser.add_argument("--moe", action="store_true")  # a mergekit-moe recipe: mergekit-moe's build
    args = parser.parse_args(argv)

    import torch
    import yaml
    from mergekit.common import parse_kmb
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    threads = int(os.environ.get("MERGEVAL_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    text = open(args.config, encoding="utf-8").read()
    options = MergeOptions(
        random_seed=args.seed,
        device=args.device,
        cuda=args.device.startswith("cuda"),
        copy_tokenizer=True,
        trust_remote_code=args.trust_remote_code,
        lazy_unpickle=args.lazy_unpickle,
        low_cpu_memory=args.low_cpu_memory,
        quiet=True,
        **({"out_shard_size": parse_kmb(args.shard_size)} if args.shard_size else {}),
    )
    if args.moe:
        return _moe(text, args, options)
    _patch_out_config()
    config = MergeConfiguration.model_validate(yaml.safe_load(text))
    run_merge(config, args.out, options=options, config_source=text)
    return 0


def _moe(text: str, args, options) -> int:
    import yaml
    from mergekit.moe.config import MoEMergeConfig
    from mergekit.scripts.moe import build

    options.apply_global_options()  # the seed: random gates and expert noise come from torch's generator
    build(MoEMergeConfig.model_validate(yaml.safe_load(text)), args.out, merge_options=options, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
