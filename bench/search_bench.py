"""Recipe search on the demo zoo: when does a search beat the best hand-written toy recipe?

    .venv/bin/python bench/search_bench.py --world /tmp/zoo-ws          # builds the full zoo there once
    .venv/bin/python bench/search_bench.py --world . --seeds 0 1 2 --trials 24

For each sampler seed, `mergeval search merge_configs/search/toy_ties.yaml --trials N` runs
through the engine (search/heldout.run_search with the plain stage loop; the Prefect flow calls
the same functions), keeping every trial's weights. Then every trial recipe, the hand-written
toy recipes (merge_configs/toy/ties_*.yaml, task_arithmetic_*.yaml) and the parents are
answered and graded on the *held-out* items, which the search never saw. Recorded per seed:
the first trial whose held-out score beats the best hand-written recipe's (and whether it ties
it), the search's finalist on the held-out items against both parents, and seconds per trial.
Results: bench/results/search_bench.json; figures → BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MERGEVAL_THREADS", "1")

from mergeval.core.lock import workspace_lock  # noqa: E402
from mergeval.engine import stages  # noqa: E402
from mergeval.engine.plan import candidates_for  # noqa: E402
from mergeval.inputs.recipes import load_recipe  # noqa: E402
from mergeval.search.heldout import run_search  # noqa: E402
from mergeval.search.request import SearchRequest  # noqa: E402

SPACE = "merge_configs/search/toy_ties.yaml"
HAND = ("ties_d08.yaml", "ties_d05.yaml", "task_arithmetic_w10.yaml", "task_arithmetic_w07.yaml", "dare_ties_d07.yaml")


def make_world(root: Path) -> None:
    """The demo workspace: the full toy zoo (a few minutes on a CPU), its items, recipes, judge."""
    from mergeval.zoo import build_zoo

    for folder in ("merge_configs/toy", "merge_configs/search"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in (REPO / folder).glob("*.yaml"):
            shutil.copy(f, root / folder / f.name)
    if not (root / "judge").exists():
        shutil.copytree(REPO / "judge", root / "judge", ignore=shutil.ignore_patterns("calibration"))
    build_zoo(root / "zoo", items_dir=root / "items" / "toy",
              template=(root / "judge" / "prompt.txt").read_text(encoding="utf-8"), log=print)


def heldout_scores(plan, recipes) -> dict[str, float]:
    """Each recipe (and its parents) answered and graded on the held-out items only."""
    held = plan.heldout_plan(recipes)
    scores = {}
    for cand, failure in stages.models_direct(held, stages.empty_stats()):
        scores[cand.name] = float("nan") if failure else stages.mean_score(held, cand)
    return scores


def one_seed(ws: Path, seed: int, trials: int) -> dict:
    request = SearchRequest(ws, SPACE, trials=trials, seed=seed, keep="all")
    with workspace_lock(ws / ".mergeval", what="search bench"):
        plan = request.plan()
        started = time.perf_counter()
        run_dir, _ = run_search(plan, stages.models_direct, log=lambda m: None)
        wall = time.perf_counter() - started
        run = json.loads((run_dir / "run.json").read_text())
        import csv

        with open(run_dir / "trials.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
        trial_recipes = [load_recipe(plan.trials_dir / f"{r['recipe']}.yaml", plan.base.workspace) for r in rows]
        hand = [load_recipe(ws / "merge_configs" / "toy" / h, plan.base.workspace) for h in HAND
                if (ws / "merge_configs" / "toy" / h).exists()]
        scores = heldout_scores(plan, list({r.name: r for r in trial_recipes + hand}.values()))
    best_hand = max(hand, key=lambda r: scores[r.name])
    bar = scores[best_hand.name]
    first_beat = next((int(r["number"]) for r in rows if scores[r["recipe"]] > bar), None)
    first_match = next((int(r["number"]) for r in rows if scores[r["recipe"]] >= bar), None)
    finalist = run["search"]["best"]
    parents = {c.name: scores[c.name] for c in candidates_for(plan.base.workspace, trial_recipes[:1]) if c.kind == "source"}
    seconds = [float(r["seconds"]) for r in rows]
    return {
        "seed": seed, "trials": len(rows), "run_dir": str(run_dir), "wall_s": round(wall, 1),
        "seconds_per_trial": {"mean": round(sum(seconds) / len(seconds), 2), "min": min(seconds), "max": max(seconds)},
        "best_hand_written": {"recipe": best_hand.name, "heldout": bar},
        "hand_written": {r.name: scores[r.name] for r in hand}, "parents": parents,
        "first_trial_beating_it": first_beat, "first_trial_matching_it": first_match,
        "finalist": {"recipe": finalist, "heldout": scores.get(finalist),
                     "beats_both_parents": finalist is not None and all(scores[finalist] > v for v in parents.values()),
                     "at_least_best_hand_written": finalist is not None and scores[finalist] >= bar},
        "trial_heldout": [{"trial": int(r["number"]), "search": float(r["score"]), "heldout": scores[r["recipe"]]}
                          for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=Path, required=True, help="A workspace with the full zoo (built there if missing).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "search_bench.json")
    args = ap.parse_args()
    ws = args.world.resolve()
    if not (ws / "zoo" / "spec_rev" / "config.json").exists():
        make_world(ws)
    results = []
    for seed in args.seeds:  # the file is rewritten after each seed: a cut-short bench keeps what it did
        results.append(one_seed(ws, seed, args.trials))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "trial_heldout"}, indent=1), flush=True)
        record = {"when": datetime.now(timezone.utc).isoformat(), "machine": platform.platform(),
                  "cpus": os.cpu_count(), "space": SPACE, "trials": args.trials, "seeds": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
