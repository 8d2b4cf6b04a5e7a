"""Helpers for the end-to-end sweep tests: a toy world and `mergeval sweep` as a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import zygote

REPO = Path(__file__).resolve().parents[1]
# Three merges keep the suite quick; together they cover ties, task arithmetic and a franken-merge.
RECIPES = ("ties_d08.yaml", "task_arithmetic_w10.yaml", "passthrough_add02_rev24.yaml")
SWEEP_ARGS = ("--batch-size", "4")  # small batches: a kill lands mid-stage


def make_toy_world(root: Path) -> Path:
    """A workspace with the shipped demo zoo (a copy: tests may damage theirs), its 200 items,
    three toy recipes and the toy judge/: nothing to train, and models that stop where the
    demo's do (a weak zoo would answer every item to its token limit)."""
    from mergeval.zoo import write_items

    (root / "merge_configs" / "toy").mkdir(parents=True)
    for name in RECIPES:
        shutil.copy(REPO / "merge_configs" / "toy" / name, root / "merge_configs" / "toy" / name)
    copy_toy_judge(root / "judge")
    copy_shipped_zoo(root / "zoo")
    write_items(root / "items" / "toy")
    return root


def copy_shipped_zoo(dst: Path) -> Path:
    shutil.copytree(REPO / "zoo", dst)
    return dst


def copy_toy_judge(folder: Path) -> Path:
    """The toy Proctora's settings and prompt (judge/toy/) as `folder`'s judge: a toy world is a
    workspace whose judge/proctora.yaml is the toy judge, so tests may edit it there."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("proctora.yaml", "prompt.txt"):
        shutil.copy(REPO / "judge" / "toy" / name, folder / name)
    return folder


def shrink_world(ws: Path, recipes: tuple[str, ...], items_per_skill: int) -> Path:
    """Keep only `recipes` and the first `items_per_skill` items of each skill: a quick sweep."""
    for recipe in (ws / "merge_configs" / "toy").glob("*.yaml"):
        if recipe.name not in recipes:
            recipe.unlink()
    for skill in (ws / "items" / "toy").iterdir():
        for item in sorted(skill.glob("*.txt"))[items_per_skill:]:
            item.unlink()
    return ws


def copy_world(src: Path, dst: Path, *, with_state: bool) -> Path:
    """A copy sharing the zoo (a symlink: same content, same fingerprints)."""
    ignore = shutil.ignore_patterns("zoo", ".prefect", *(() if with_state else (".mergeval", "reports")))
    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    (dst / "zoo").symlink_to(src / "zoo")
    return dst


def sweep_env(ws: Path, home: Path | None = None) -> dict:
    """A sweep's environment. Its Prefect home is this test process's one for sweeps unless `home`
    is given, as ~/.prefect is a user's: shared by every sweep, so they share the temporary
    Prefect server that outlives each command (orchestration/temporary_server.py), as a
    user's sweeps in a row do. A home starts with a copy of a database migrated once per test
    process (a fresh one costs ~6 s of migrations, which a user pays once, on the first sweep)."""
    shared, home = home is None, home or _shared_sweep_home()
    if not (home / "prefect.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(migrated_prefect_db(), home / "prefect.db")
    env = dict(os.environ, PREFECT_HOME=str(home), OMP_NUM_THREADS="1", MERGEVAL_THREADS="1")
    env.pop("PREFECT_API_URL", None)
    if shared:  # stopped when the session ends (stop_shared_sweep_server): not started again meanwhile
        env["MERGEVAL_PREFECT_SERVER_IDLE_S"] = "900"
    return env


_sweep_home: Path | None = None


def _shared_sweep_home() -> Path:
    global _sweep_home
    if _sweep_home is None:
        import tempfile

        _sweep_home = Path(tempfile.mkdtemp(prefix="mergeval-sweeps-prefect-"))
    return _sweep_home


def stop_shared_sweep_server() -> None:
    """Stop the temporary Prefect server the sweeps of this process shared, and wait for it to
    go (a benchmark's cold run; a session's end: it would idle out a minute later, after the
    next test session has started)."""
    if _sweep_home is None:
        return
    from mergeval.orchestration.temporary_server import gone

    for state in (_sweep_home / "mergeval-temporary-server").glob("*.json"):
        try:
            pid = json.loads(state.read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            continue
        gone(pid, wait_s=30)


_migrated_db: Path | None = None


def migrated_prefect_db() -> Path:
    """A Prefect database as a server leaves it after its first start: migrated, block types added."""
    global _migrated_db
    if _migrated_db is None:
        import tempfile
        import urllib.request

        from tests.serve import free_port

        home = Path(tempfile.mkdtemp(prefix="mergeval-prefect-template-"))
        port = free_port()
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1")
        env.pop("PREFECT_API_URL", None)
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            while True:
                assert server.poll() is None and time.monotonic() < deadline, "prefect server start failed"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                        break
                except OSError:
                    time.sleep(0.2)
        finally:
            server.terminate()
            server.wait()
        import sqlite3

        with sqlite3.connect(home / "prefect.db") as db:  # the write-ahead log into the file: one file to copy
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _migrated_db = home / "prefect.db"
    return _migrated_db


def sweep_cmd(ws: Path, *args: str, keep: str | None = "all") -> list[str]:
    """`mergeval sweep` on `ws`; keep=None leaves --keep out, as a user does (top-3)."""
    keeping = ("--keep", keep) if keep else ()
    return [sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), "sweep", *SWEEP_ARGS, *keeping, *args]


def run_sweep(ws: Path, *args: str, check: bool = True, keep: str | None = "all",
              home: Path | None = None) -> subprocess.CompletedProcess:
    proc = zygote.run(sweep_cmd(ws, *args, keep=keep), env=sweep_env(ws, home), capture_output=True, text=True,
                      timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    match = re.search(r"^report: (.+)/report\.md$", proc.stdout, re.M)
    assert match, proc.stdout[-2000:]
    return Path(match.group(1))


def run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def results(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def line_counts(folder: Path) -> dict[str, int]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): len(p.read_text().splitlines()) for p in folder.rglob("*.jsonl")}


def kill_when(ws: Path, condition, timeout: float = 300) -> None:
    """Start a sweep and SIGKILL it (and its merge workers) as soon as `condition()` holds."""
    proc = zygote.Popen(sweep_cmd(ws), env=sweep_env(ws), start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if proc.poll() is not None:
                raise AssertionError("the sweep finished before the kill point was reached")
            if time.monotonic() > deadline:
                raise AssertionError("kill point not reached in time")
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def partly_written(folder: Path, total: int):
    """True once some JSON-lines file under `folder` holds between 1 and total-1 records."""
    return lambda: any(0 < n < total for n in line_counts(folder).values())
