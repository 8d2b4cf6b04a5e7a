"""Scale benchmarks, as wall times and ratios measured in one run on one machine (→ BENCHMARKS.md).

    .venv/bin/python bench/scale_bench.py                  # quick toy world (four recipes), temp dir
    .venv/bin/python bench/scale_bench.py --items 40       # fewer items per model: a faster run

1. overlap: the sweep with stages overlapped (next merge built while a model is answered)
   vs strictly sequential, both in one process with the embedded Prefect server
2. server: the same sweep against a `mergeval server` vs the embedded (temporary) server
3. workers: a pooled sweep (one child flow run per model) with two `mergeval worker`s vs one

Every sweep starts from an empty state folder (a fresh copy of the world), so each one merges,
answers and grades everything. Results land in a JSON file beside the printout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.sweep_helpers import copy_world, make_toy_world  # noqa: E402
from tests.test_server import free_port, healthy, mergeval, start, stop, wait_for  # noqa: E402

OVERLAP: dict = {}  # sweep name → build seconds, and how many of them ran beside answering
ENV = {"OMP_NUM_THREADS": "1", "MERGEVAL_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"}


def run_flow(ws: Path, overlap: bool, pool: str | None) -> None:
    """--flow mode: the sweep flow in this process (the CLI has no --pool / sequential switch)."""
    from mergeval.core.workspace import Workspace
    from mergeval.orchestration.flows import load_flow, prefect_defaults

    workspace = Workspace(ws)
    prefect_defaults(workspace)
    state = load_flow(workspace)(workspace=str(ws), keep="all", batch_size=8, overlap=overlap, pool=pool,
                                 return_state=True)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:  # the stage tasks' intervals, for the overlap figure
        this_run = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = client.read_task_runs(flow_run_filter=this_run)
    print("TASKS " + json.dumps([(t.name, t.start_time.timestamp(), t.end_time.timestamp()) for t in runs
                                 if t.start_time and t.end_time]))
    sys.exit(0 if state.is_completed() else 1)


def build_overlap(tasks: list) -> dict:
    """Seconds in which a merge was being built while some model was answered or graded."""
    def merged(spans):
        out = []
        for a, b in sorted(spans):
            if out and a <= out[-1][1]:
                out[-1][1] = max(out[-1][1], b)
            else:
                out.append([a, b])
        return out

    builds = merged([(a, b) for n, a, b in tasks if n.startswith("build ")])
    others = merged([(a, b) for n, a, b in tasks if n.startswith(("answer ", "grade "))])
    both = sum(max(0.0, min(b1, b2) - max(a1, a2)) for a1, b1 in builds for a2, b2 in others)
    return {"build_s": round(sum(b - a for a, b in builds), 1), "build_while_answering_s": round(both, 1)}


def sweep_seconds(world: Path, root: Path, name: str, *, api: str | None, overlap=True, pool=None) -> float:
    ws = copy_world(world, root / name, with_state=False)
    env = dict(os.environ, **ENV, PREFECT_HOME=str(ws / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    if api:
        env["PREFECT_API_URL"] = api
    cmd = [sys.executable, __file__, "--flow", str(ws), "--overlap", str(int(overlap))]
    cmd += ["--pool", pool] if pool else []
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    tasks = next((json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("TASKS ")), [])
    OVERLAP[name] = build_overlap(tasks)
    print(f"  {name}: {seconds:.1f} s; {OVERLAP[name]}", flush=True)
    return round(seconds, 2)


def with_server(root: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, **ENV, PREFECT_HOME=str(root / "server-home"))
    env.pop("PREFECT_API_URL", None)
    proc = start(mergeval("server", "--port", str(port)), env, root / "server.log")
    wait_for(lambda: healthy(url), "prefect server", timeout=120, proc=proc, log=root / "server.log")
    return proc, f"{url}/api"


def workers(api: str, root: Path, pool: str, n: int) -> list:
    procs = []
    for i in range(n):
        env = dict(os.environ, **ENV, PREFECT_API_URL=api, PREFECT_HOME=str(root / f"{pool}-w{i}"))
        log = root / f"{pool}-w{i}.log"
        procs.append(start(mergeval("worker", "--pool", pool, "--name", f"{pool}-w{i}"), env, log))
        wait_for(lambda: "started" in log.read_text(errors="replace"), "worker", proc=procs[-1], log=log)
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="items per model (the toy suite has 200)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_bench.json")
    parser.add_argument("--parts", default="overlap,server,workers", help="which figures to measure")
    parser.add_argument("--flow", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--overlap", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flow:
        return run_flow(args.flow, bool(args.overlap), args.pool)

    root = Path(tempfile.mkdtemp(prefix="mergeval-scale-"))
    figures: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores", "items": args.items}
    try:
        world = make_toy_world(root / "world")
        shutil.copy(REPO / "merge_configs" / "toy" / "linear_half.yaml", world / "merge_configs" / "toy")
        for skill in ("add", "rev"):
            for item in sorted((world / "items" / "toy" / skill).glob("*.txt"))[args.items // 2:]:
                item.unlink()
        print("1. overlapped vs sequential (embedded Prefect)", flush=True)
        seq = sweep_seconds(world, root, "sequential", api=None, overlap=False)
        ovl = sweep_seconds(world, root, "overlapped", api=None, overlap=True)
        figures["overlap"] = {"sequential_s": seq, "overlapped_s": ovl, "ratio": round(ovl / seq, 3),
                              "sequential_tasks": OVERLAP["sequential"], "overlapped_tasks": OVERLAP["overlapped"]}

        if args.parts == "overlap":
            return
        server, api = with_server(root)
        try:
            print("2. Prefect server vs embedded", flush=True)
            srv = sweep_seconds(world, root, "server", api=api)
            figures["server"] = {"embedded_s": ovl, "server_s": srv, "ratio": round(srv / ovl, 3)}
            print("3. pooled sweep: one worker vs two", flush=True)
            timings = {}
            for n in (1, 2):
                procs = workers(api, root, f"pool{n}", n)
                try:
                    timings[n] = sweep_seconds(world, root, f"workers{n}", api=api, pool=f"pool{n}")
                finally:
                    for p in procs:
                        stop(p)
            figures["workers"] = {"one_s": timings[1], "two_s": timings[2], "ratio": round(timings[2] / timings[1], 3)}
        finally:
            stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
