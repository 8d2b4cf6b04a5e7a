"""Sweep benchmarks, as ratios measured in one run on one machine (figures → BENCHMARKS.md).

    .venv/bin/python bench/sweep_bench.py                 # a quick toy world in a temp dir
    .venv/bin/python bench/sweep_bench.py --world .       # this workspace (needs `mergeval zoo`)

1. re-run / first run of `mergeval sweep` (goal ≤ 0.10), embedded and against `mergeval server`
2. batched answering vs one item at a time, answers per second (goal ≥ 4×)
3. the sweep through Prefect vs the same stage functions called directly, like for like:
   `mergeval sweep --sequential` vs a sequential plain loop, and the overlapped sweep vs the
   same overlap in plain threads; first runs alternated, medians and every run (goal ≤ 1.10×);
   embedded, cold (no server left by an earlier command) and warm (the temporary Prefect server
   and the merge server left by the command before), and against a running `mergeval server`
4. the build stage vs `mergekit-yaml` on the same recipe (goal ≤ 1.05×)
5. one call to the merge server, as each recipe check makes (median of 30)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MERGEVAL_THREADS", "1")

from mergeval.answering.settings import GenerationSettings  # noqa: E402
from mergeval.core.workspace import Workspace  # noqa: E402
from mergeval.engine import merge_server, stages  # noqa: E402
from mergeval.engine.build import build  # noqa: E402
from mergeval.engine.plan import plan_sweep  # noqa: E402
from mergeval.inputs.recipes import load_recipe  # noqa: E402
from tests.sweep_helpers import (  # noqa: E402
    copy_world,
    make_toy_world,
    migrated_prefect_db,
    stop_shared_sweep_server,
    sweep_env,
)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Items answered per generate() call, on both sides (--batch-size): a smaller batch is more work
# per model for the same tasks, which shows how the orchestration's cost scales.
BATCH_SIZE = GenerationSettings().batch_size


def cli_sweep(ws: Path, api_url: str | None = None, *extra: str) -> None:
    cmd = [sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), "sweep", "--keep", "all",
           "--batch-size", str(BATCH_SIZE), *extra]
    env = sweep_env(ws) if api_url is None else {**sweep_env(ws), "PREFECT_API_URL": api_url}
    subprocess.run(cmd, env=env, check=True, capture_output=True)


@contextmanager
def mergeval_server(root: Path):
    """`mergeval server` on a free port, as a user running sweeps overnight would have it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PREFECT_HOME=str(root / "server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "mergeval.cli.main", "server", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(1200):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def direct_sweep(ws: Path, overlap: bool) -> None:
    """The flow's loop without Prefect, in a fresh process like the CLI's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--direct", str(ws), "--batch-size", str(BATCH_SIZE),
           *(["--overlap"] if overlap else [])]
    subprocess.run(cmd, env=sweep_env(ws), check=True, capture_output=True)


def run_direct(ws: Workspace, overlap: bool) -> None:
    plan = plan_importing_transformers(ws)
    if not overlap:
        stages.run_direct(plan)
        return
    # flows/recipe.py's schedule in plain threads: the next merge is built while this model is
    # answered; answering and the local judge share one lock, as they share GPU_LOCK there.
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from datetime import datetime, timezone

    started, stats, lock, cands = datetime.now(timezone.utc), stages.empty_stats(), threading.Lock(), plan.candidates

    def locked(fn, cand):
        with lock:
            return fn(plan, cand)

    with ThreadPoolExecutor(max_workers=3) as pool:
        builds, grading = {}, None
        for i, cand in enumerate(cands):
            if i not in builds and stages.needs_build(plan, cand):
                builds[i] = pool.submit(stages.build_stage, plan, cand)
            if i in builds:
                stages.count(stats, "build", builds.pop(i).result())
            later = next((j for j in range(i + 1, len(cands)) if stages.needs_build(plan, cands[j])), None)
            if later is not None and not builds:
                builds[later] = pool.submit(stages.build_stage, plan, cands[later])
            stages.count(stats, "answer", locked(stages.answer_stage, cand))
            if grading:
                stages.count(stats, "grade", grading.result())
            grading = pool.submit(locked, stages.grade_stage, cand)
        if grading:
            stages.count(stats, "grade", grading.result())
    stages.finish(plan, list(cands), stats, [], {}, started)


def plan_importing_transformers(ws: Workspace):
    """The sweep's plan, made as `mergeval sweep` makes it: in a thread, while this process imports
    what it answers with (the CLI imports Prefect there too), so the direct loop gets the same
    overlap of the merge server's start with this process's imports."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        planning = pool.submit(plan_sweep, ws, ws.configs / "toy", ws.items / "toy", ws.judge_file,
                               GenerationSettings(batch_size=BATCH_SIZE))
        import transformers.modeling_utils  # noqa: F401
        import transformers.models.auto.tokenization_auto  # noqa: F401
        return planning.result()


def cold() -> None:
    """No merge server and no temporary Prefect server left from an earlier run (both outlive
    their command): a first run pays for mergekit's import and Prefect's server start, as a
    user's first sweep of the day does."""
    merge_server.shutdown()
    stop_shared_sweep_server()


def fresh(world: Path, root: Path, name: str) -> Path:
    return copy_world(world, root / name, with_state=False)


def bench_rerun(world: Path, root: Path, api_url: str | None = None, repeats: int = 3) -> dict:
    """Embedded (api_url None: each command starts a temporary Prefect server) or against a
    running server (how overnight sweeps are meant to run: `mergeval server`)."""
    ws = fresh(world, root, "rerun-server" if api_url else "rerun")
    cold()
    first = timed(lambda: cli_sweep(ws, api_url))
    again = [timed(lambda: cli_sweep(ws, api_url)) for _ in range(repeats)]  # median: one run is noisy
    rerun = statistics.median(again)
    return {"first_s": round(first, 2), "rerun_s": round(rerun, 2), "reruns_s": [round(a, 2) for a in again],
            "ratio": round(rerun / first, 3)}


def bench_rerun_server(world: Path, root: Path) -> dict:
    with mergeval_server(root) as url:
        return bench_rerun(world, root, api_url=url)


def bench_prefect_overhead(world: Path, root: Path, repeats: int = 3, api_url: str | None = None,
                           warm: bool = False) -> dict:
    """Like for like: sequential against sequential, overlapped against overlapped. Alternated
    (which one goes first flips each round), medians and every run: two identical runs differ
    by up to ±15 % on this box. Each run sweeps a fresh copy of the world (every merge, answer
    and grade to do). Cold: no server left from an earlier command, as a user's first sweep of
    the day (a temporary Prefect server and the merge server are started by the run); warm:
    both left by the command before, as every later sweep within their idle time finds them.
    api_url: the sweeps run against that server instead of a temporary one."""
    out = {}
    for mode, overlap in (("sequential", False), ("overlapped", True)):
        prefect, direct = [], []
        if warm:  # one untimed run of each leaves the servers up
            cli_sweep(fresh(world, root, f"warm-prefect-{mode}"), api_url)
            direct_sweep(fresh(world, root, f"warm-direct-{mode}"), overlap)
        for k in range(repeats):
            runs = [(prefect, lambda: cli_sweep(fresh(world, root, f"prefect-{mode}{k}{warm}"), api_url,
                                                *([] if overlap else ["--sequential"]))),
                    (direct, lambda: direct_sweep(fresh(world, root, f"direct-{mode}{k}{warm}"), overlap))]
            for times, run in runs if k % 2 == 0 else runs[::-1]:
                if not warm:
                    cold()
                times.append(timed(run))
        p, d = statistics.median(prefect), statistics.median(direct)
        out[mode] = {"prefect_s": round(p, 2), "direct_s": round(d, 2), "ratio": round(p / d, 3),
                     "prefect_runs_s": [round(x, 2) for x in prefect], "direct_runs_s": [round(x, 2) for x in direct],
                     # each round's two runs, back to back: the host's drift between rounds cancels
                     "round_ratios": [round(a / b, 3) for a, b in zip(prefect, direct)]}
    return out


def bench_prefect_overhead_server(world: Path, root: Path) -> dict:
    with mergeval_server(root) as url:
        return bench_prefect_overhead(world, root, api_url=url)


def bench_batching(world: Path) -> dict:
    import torch

    from mergeval.answering.transformers_backend import TransformersBackend

    torch.set_num_threads(1)
    ws = Workspace(world)
    plan = plan_sweep(ws, ws.configs / "toy", ws.items / "toy", ws.judge_file)
    items = list(plan.items)
    model = plan.candidate("spec_add").path
    rates = {}
    for size in (1, 32):
        # the toy suite's own answer length (items/toy/suite.yaml), as a sweep uses it
        with TransformersBackend(model, GenerationSettings(batch_size=size, max_new_tokens=items[0].max_new_tokens)) as gen:
            seconds = timed(lambda: list(gen.answer(items, {it.id for it in items})))
        rates[size] = len(items) / seconds
    return {"one_at_a_time_per_s": round(rates[1], 1), "batched_32_per_s": round(rates[32], 1),
            "speedup": round(rates[32] / rates[1], 2)}


def bench_build_vs_mergekit(world: Path, root: Path, repeats: int = 3) -> dict:
    ws = Workspace(fresh(world, root, "build"))
    recipe = load_recipe(ws.configs / "toy" / "ties_d08.yaml", ws)
    resolved = root / "ties_resolved.yaml"
    import yaml

    resolved.write_text(yaml.safe_dump(recipe.config, sort_keys=False))
    ours, theirs = [], []
    for k in range(repeats):
        shutil.rmtree(ws.state, ignore_errors=True)
        ours.append(timed(lambda: build(recipe, ws)))
        out = root / f"mk{k}"
        theirs.append(timed(lambda: subprocess.run(
            [str(Path(sys.executable).with_name("mergekit-yaml")), str(resolved), str(out), "--random-seed", "0"],
            check=True, capture_output=True)))
    o, t = statistics.median(ours), statistics.median(theirs)
    return {"build_s": round(o, 2), "mergekit_yaml_s": round(t, 2), "ratio": round(o / t, 3), "repeats": repeats}


def bench_merge_server_call(repeats: int = 30) -> dict:
    """One round trip to the merge server (merge_server.call of a function that returns at
    once), as each recipe check makes: the server forks a handler, which forks the call."""
    import os as os_module

    merge_server.warm()
    merge_server.call(os_module.getpid)  # the server has finished importing
    seconds = [timed(lambda: merge_server.call(os_module.getpid)) for _ in range(repeats)]
    return {"median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4), "calls": repeats}


def main() -> None:
    global BATCH_SIZE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, help="a workspace with zoo/, items/toy, merge_configs/toy")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep_bench.json")
    parser.add_argument("--direct", type=Path, help=argparse.SUPPRESS)  # the baseline's own process
    parser.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", help="run only these figures (e.g. prefect_vs_direct rerun)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per Prefect-vs-direct figure")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="items per generate() call in the sweeps, Prefect and direct alike")
    args = parser.parse_args()
    BATCH_SIZE = args.batch_size
    if args.direct:  # it exits as `mergeval` does (cli/main.py): like for like
        from mergeval.core.exiting import exit_without_teardown

        run_direct(Workspace(args.direct.resolve()), args.overlap)
        exit_without_teardown(0)
    root = Path(tempfile.mkdtemp(prefix="mergeval-bench-"))
    world = args.world.resolve() if args.world else make_toy_world(root / "world")
    # Each run's fresh workspace gets a copy of a migrated Prefect database (sweep_env), as a
    # user's ~/.prefect has after their first sweep: made here, before any timing.
    migrated_prefect_db()
    benches = {
        "rerun": lambda: bench_rerun(world, root),
        "rerun_with_server": lambda: bench_rerun_server(world, root),
        "batching": lambda: bench_batching(world),
        "prefect_vs_direct": lambda: bench_prefect_overhead(world, root, args.repeats),
        "prefect_vs_direct_warm": lambda: bench_prefect_overhead(world, root, args.repeats, warm=True),
        "prefect_vs_direct_with_server": lambda: bench_prefect_overhead_server(world, root),
        "build_vs_mergekit_yaml": lambda: bench_build_vs_mergekit(world, root),
        "merge_server_call": bench_merge_server_call,
    }
    figures = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "world": str(world),
        "batch_size": BATCH_SIZE,
        **{name: bench() for name, bench in benches.items() if not args.only or name in args.only},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
