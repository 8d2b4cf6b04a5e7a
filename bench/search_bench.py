"""Recipe search on the demo zoo: when does a search beat the best hand-written toy recipe?

    .venv/bin/python bench/search_bench.py --world /tmp/zoo-ws          # a demo workspace there (shipped zoo)
    .venv/bin/python bench/search_bench.py --world . --seeds 0 1 2 --trials 24

For each sampler seed, `mergeval search merge_configs/search/toy_ties.yaml --trials N` runs
through the engine (search/heldout.run_search with the plain stage loop; the Prefect flow calls
the same functions), keeping every trial's weights. Then every trial recipe, the hand-written
toy recipes (every one in merge_configs/toy/) and the parents are
answered and graded on the *held-out* items, which the search never saw. Recorded per seed:
the first trial whose held-out score beats the best hand-written recipe's (and whether it ties
it), the search's finalist on the held-out items against both parents, and seconds per trial.
Results: bench/results/search_seed<N>.json; figures → BENCHMARKS.md.
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


def make_world(root: Path) -> None:
    """A demo workspace: the shipped zoo (committed, trained; `mergeval zoo` checks it), its items,
    the toy recipes and the search spaces, the judges."""
    for folder in ("merge_configs/toy", "merge_configs/search"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in (REPO / folder).glob("*.yaml"):
            shutil.copy(f, root / folder / f.name)
    for folder in ("zoo", "items/toy", "judge"):
        if not (root / folder).exists():
            shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("calibration"))


def heldout_scores(plan, recipes) -> dict[str, float]:
    """Each recipe (and its parents) answered and graded on the held-out items only."""
    held = plan.heldout_plan(recipes)
    scores = {}
    for cand, failure in stages.models_direct(held, stages.empty_stats()):
        scores[cand.name] = float("nan") if failure else stages.mean_score(held, cand)
    return scores


def one_seed(ws: Path, seed: int, trials: int) -> dict:
    # the same request (and so the same study) as `mergeval search SPACE --trials N --seed S` there
    request = SearchRequest.from_parameters(workspace=ws, space=SPACE, trials=trials, seed=seed, keep="all",
                                            batch_size=32, max_new_tokens=64)
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
        # every hand-written toy recipe (ties, task arithmetic, dare, linear, slerp, passthrough, MoE, two-stage)
        hand = [load_recipe(f, plan.base.workspace) for f in sorted((ws / "merge_configs" / "toy").glob("*.yaml"))]
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
    ap.add_argument("--world", type=Path, required=True, help="A demo workspace (made there from the shipped zoo if missing).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results",
                    help="One file per seed: search_seed<N>.json (benches of different seeds may run at once).")
    args = ap.parse_args()
    ws = args.world.resolve()
    if not (ws / "zoo" / "spec_rev" / "config.json").exists():
        make_world(ws)
    for seed in args.seeds:  # a file per seed, written when it is done: a cut-short bench keeps what it did
        result = one_seed(ws, seed, args.trials)
        print(json.dumps({k: v for k, v in result.items() if k != "trial_heldout"}, indent=1), flush=True)
        record = {"when": datetime.now(timezone.utc).isoformat(), "machine": platform.platform(),
                  "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), "space": SPACE,
                  "trials": args.trials, "seeds": [result]}
        out = args.out_dir / f"search_seed{seed}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
