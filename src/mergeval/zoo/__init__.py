"""The toy zoo: a base model, two specialists and a toy Proctora, trained on a CPU in minutes.

    mergeval zoo --out zoo --seed 0

or in Python: `build_zoo(Path("zoo"), seed=0, items_dir=Path("items/toy"))`. Every model is a
real Llama in Hugging Face format with a word-level tokenizer and a chat template; the same
seed gives the same weights, and a model already built for the same recipe and seed is reused.
See /work/shared/design/zoo-recipe.md for why the recipe looks the way it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mergeval.core.hashing import content_hash
from mergeval.zoo.toy_items import write_items

__all__ = ["build_zoo", "write_items"]


def build_zoo(
    out: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    judge: bool = True,
    items_dir: Path | None = None,
    template: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Build (or reuse) out/base, out/spec_add, out/spec_rev and, with judge, out/proctora."""
    # torch and transformers (12-18 s to import here) only when something may be trained:
    # `mergeval zoo` on the shipped zoo imports this package just to check its manifest
    import torch

    from mergeval.zoo import toy_judge as proctora
    from mergeval.zoo import toy_models as models
    from mergeval.zoo.model_files import ensure

    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is faster than two on a shared 2-core machine
    try:
        if items_dir is not None:
            write_items(Path(items_dir))
            log(f"items: wrote 200 held-out toy items under {items_dir}")
        zoo = models.zoo_recipe(quick)
        paths: dict[str, Path] = {}
        paths["base"] = ensure(
            out, "base", recipe=content_hash({"zoo": zoo, "model": "base"}), seed=seed, log=log,
            build=lambda tmp: models.build_base(tmp, seed=seed, quick=quick, log=log),
        )
        for name in models.SPECIALISTS:
            paths[name] = ensure(
                out, name, recipe=content_hash({"zoo": zoo, "model": name}), seed=seed, log=log,
                build=lambda tmp, name=name: models.build_specialist(
                    tmp, name=name, base=paths["base"], seed=seed, quick=quick, log=log),
            )
        if judge:
            text = proctora.load_template(template)
            recipe = content_hash({"zoo": zoo, "judge": proctora.judge_recipe(quick), "template": text})
            paths["proctora"] = ensure(
                out, "proctora", recipe=recipe, seed=seed, log=log,
                build=lambda tmp: proctora.build_judge(tmp, zoo=paths, template=text, seed=seed,
                                                       quick=quick, log=log),
            )
        return paths
    finally:
        torch.set_num_threads(threads)
