"""Does the zoo recipe make merging visibly work for every seed, not only the shipped one?

    .venv/bin/python bench/zoo_seeds_bench.py                     # seeds 0-4, ~3 min each on 2 cores
    .venv/bin/python bench/zoo_seeds_bench.py --seeds 0 1 --out /tmp/seeds.json

For each seed: trains base, spec_add and spec_rev (no judge), answers the 200 held-out toy items
greedily with them and with the in-process merges of zoo/merging.py (the same ties and
task_arithmetic the toy recipes ask mergekit for), scores exact match, and compares the best
ties / task_arithmetic merge with its best parent, paired over items with the report's own
bootstrap (report/stats.py). Writes the raw figures to bench/results/zoo_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mergeval.report.stats import Bootstrap, paired, score_matrix  # noqa: E402
from mergeval.zoo import build_zoo  # noqa: E402
from mergeval.zoo import toy_tasks as tasks  # noqa: E402
from mergeval.zoo.check import answer_all  # noqa: E402

PARENTS = ("spec_add", "spec_rev")
CONTENDERS = ("ties_0.8", "ties_0.5", "task_arithmetic_1.0")  # what the toy recipes merge with


def exact_match_frame(answers: dict[str, list[str]]) -> pd.DataFrame:
    items = tasks.heldout_items()
    rows = [{"model": m, "item_id": it["id"], "skill": it["skill"], "weight": 1.0,
             "score": float(a.strip() == it["expected"])}
            for m, texts in answers.items() for it, a in zip(items, texts)]
    return pd.DataFrame(rows)


def one_seed(seed: int, root: Path) -> dict:
    started = time.perf_counter()
    build_zoo(root / f"seed{seed}", seed=seed, judge=False, log=lambda m: None)
    trained = time.perf_counter() - started
    frame = exact_match_frame(answer_all(root / f"seed{seed}"))
    scores = score_matrix(frame)
    means = frame.groupby("model")["score"].mean()
    by_skill = frame.groupby(["model", "skill"])["score"].mean().unstack()
    best_parent = max(PARENTS, key=lambda p: means[p])
    best = max(CONTENDERS, key=lambda m: means[m])
    diff = paired(scores, best, best_parent, Bootstrap())
    return {"seed": seed, "train_seconds": round(trained, 1), "best_merge": best, "best_parent": best_parent,
            "diff": round(diff["diff"], 4), "ci_low": round(diff["ci_low"], 4), "ci_high": round(diff["ci_high"], 4),
            "scores": {m: round(float(v), 4) for m, v in means.items()},
            "by_skill": {m: {s: round(float(v), 3) for s, v in row.items()} for m, row in by_skill.iterrows()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "zoo_seeds.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = one_seed(seed, Path(tmp))
            results.append(r)
            print(f"seed {seed}: {r['best_merge']} {r['scores'][r['best_merge']]:.3f} vs {r['best_parent']} "
                  f"{r['scores'][r['best_parent']]:.3f}: {r['diff']:+.3f} ({r['ci_low']:+.3f} to {r['ci_high']:+.3f}), "
                  f"trained in {r['train_seconds']:.0f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "seeds": results,
    }, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
