"""Two commits' `mergeval sweep` against the same direct loop, alternated, on warm servers.

    .venv/bin/python bench/ab_sweep.py --world <demo world> --base 16ee7d4 --out bench/results/X.json

On this host two identical runs differ by up to ±20 %, more than most changes to the
orchestration are worth: one bench run per commit cannot tell them apart. Here each round
runs the checked-out code ("head"), the code of --base (a git worktree, imported first through
PYTHONPATH) and the direct loop back to back, in an order that rotates, and records each
round's ratios. Warm: a first, untimed run of each leaves the merge server and the temporary
Prefect server up, as for every sweep after the first of the day. `--keep all` on both sides,
as bench/sweep_bench.py's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.sweep_bench import direct_sweep, fresh, timed  # noqa: E402
from tests.sweep_helpers import migrated_prefect_db, sweep_env  # noqa: E402


def cli_sweep(ws: Path, src: Path | None, sequential: bool, home: Path) -> None:
    cmd = [sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), "sweep", "--keep", "all",
           *(["--sequential"] if sequential else [])]
    env = sweep_env(ws, home)  # a Prefect home per side: each its own temporary server, of its own code
    if src:  # the base commit's package, found before the editable install's
        env["PYTHONPATH"] = str(src)
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--base", required=True, help="the commit to compare the checked-out code with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["sequential", "overlapped"], choices=["sequential", "overlapped"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mergeval-ab-"))
    base = root / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True,
                   capture_output=True)
    migrated_prefect_db()
    world = args.world.resolve()
    figures = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": f"{os.cpu_count()} cores",
               "head": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip(), "base": args.base}
    try:
        for mode in args.modes:
            sequential = mode == "sequential"
            sides = {"head": lambda ws: cli_sweep(ws, None, sequential, root / "home-head"),
                     "base": lambda ws: cli_sweep(ws, base / "src", sequential, root / "home-base"),
                     "direct": lambda ws: direct_sweep(ws, overlap=not sequential)}
            for name, run in sides.items():  # warm-up: leaves the servers up, untimed
                run(fresh(world, root, f"warm-{name}-{mode}"))
            runs = {name: [] for name in sides}
            for k in range(args.repeats):
                names = list(sides)[k % 3:] + list(sides)[:k % 3]
                for name in names:
                    runs[name].append(round(timed(lambda: sides[name](fresh(world, root, f"{name}-{mode}{k}"))), 2))
            median = {name: statistics.median(times) for name, times in runs.items()}
            figures[mode] = {
                "runs_s": runs,
                "head/direct": round(median["head"] / median["direct"], 3),
                "base/direct": round(median["base"] / median["direct"], 3),
                "round_ratios": {side: [round(a / b, 3) for a, b in zip(runs[side], runs["direct"])]
                                 for side in ("head", "base")},
            }
            print(mode, json.dumps(figures[mode]), flush=True)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
