"""An API key set for the judge is used, and written nowhere: not in the workspace, its caches,
its reports, Prefect's database or the sweep's own output."""

from __future__ import annotations

from pathlib import Path

from tests import serve
from tests.sweep_helpers import make_toy_world, results, run_dir_of, run_sweep, shrink_world

SECRET = "sk-mergeval-test-7f3a9c1e5b"


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_judge_api_key_is_written_nowhere(tmp_path, monkeypatch):
    # one merge and a few items are enough: the judge path is what is under test
    ws = shrink_world(make_toy_world(tmp_path / "ws"), ("ties_d08.yaml",), items_per_skill=5)
    judge = ws / "zoo" / "proctora"
    with serve.transformers_serve([str(judge)], tmp_path / "serve.log") as url:
        (ws / "judge" / "remote.yaml").write_text(
            f"backend: openai\nendpoint: {url}\nmodel: {judge}\napi_key_env: PROCTORA_API_KEY\nmax_tokens: 8\n")
        monkeypatch.setenv("PROCTORA_API_KEY", SECRET)
        # Prefect's home inside the workspace, so that its database is searched too
        proc = run_sweep(ws, "--judge", "judge/remote.yaml", home=ws / ".prefect")
    rows = results(run_dir_of(proc))
    assert rows and all(r["judge_score"] is not None for r in rows)  # the served judge really graded
    assert SECRET not in proc.stdout + proc.stderr
    assert files_containing(ws, SECRET.encode()) == []  # workspace, .mergeval, reports, .prefect
