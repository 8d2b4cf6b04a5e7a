"""Issue #7: the disk fills up during a merge or while answers are written.

The full disk is injected (tests/disk_faults.py: real files, real buffering, only the raw
write refuses with ENOSPC once a byte budget is spent), so these run on any machine; the last
test uses a real size-limited tmpfs where this machine lets us mount one. What must hold:
nothing half-done counts as done, nothing finished is lost, the message says what filled up
and how much room there is, the other models still run, and once space is freed the same
command gives the results of an uninterrupted sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager

import pytest

from mergeval.core import store
from mergeval.engine import stages
from mergeval.engine.build import BuildError, build
from mergeval.inputs.recipes import load_recipe
from tests.disk_faults import disk_fills_after
from tests.fault_world import (
    N_ITEMS,
    N_MODELS,
    baseline_run,
    fresh_copy,
    plan_of,
    same_results,
    small_world,
    state_files,
)
from tests.sweep_helpers import REPO, run_dir_of, run_json, run_sweep
from tests.test_build import TIES, write_recipe

SITE = REPO / "tests" / "disk_full_site"  # its sitecustomize.py fills the disk inside merge workers


@pytest.fixture
def full_disk_in_merges(monkeypatch):
    """Merge workers started from now on (by build() or a sweep subprocess) find the disk
    full after `nbytes` of output; call it with the budget and, optionally, one recipe."""
    def fill(nbytes: int, recipe: str = "") -> None:
        path = os.pathsep.join([str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")])
        monkeypatch.setenv("PYTHONPATH", path.rstrip(os.pathsep))
        monkeypatch.setenv("MERGEVAL_TEST_FULL_DISK_BYTES", str(nbytes))
        monkeypatch.setenv("MERGEVAL_TEST_FULL_DISK_RECIPE", recipe)

    yield fill
    monkeypatch.delenv("MERGEVAL_TEST_FULL_DISK_BYTES", raising=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory)


@pytest.fixture(scope="module")
def baseline(world, tmp_path_factory):
    return baseline_run(world, tmp_path_factory)


def test_atomic_write_leaves_no_temp_file_when_the_disk_fills(tmp_path):
    target = tmp_path / "out" / "report.md"
    store.write_atomic(target, "old\n")
    with disk_fills_after(10, under=tmp_path), pytest.raises(store.DiskFull) as caught:
        store.write_atomic(target, "new and much longer than ten bytes\n")
    assert str(target) in str(caught.value) and "free" in str(caught.value)
    assert target.read_text() == "old\n"  # the old file is whole, the new one never appeared
    assert [p.name for p in target.parent.iterdir()] == ["report.md"]  # no .report.md.*.tmp


def test_appended_records_survive_a_full_disk_and_a_torn_one_does_not_count(tmp_path):
    path = tmp_path / "answers.jsonl"
    first = [{"item": i, "answer": "x" * 40} for i in range(3)]
    store.append_jsonl(path, first, sealed=True)
    line = len(path.read_bytes()) // 3
    second = [{"item": i, "answer": "y" * 40} for i in range(3, 6)]
    with disk_fills_after(line + line // 2, under=tmp_path), pytest.raises(store.DiskFull):
        store.append_jsonl(path, second, sealed=True)  # room for one record and half the next
    assert not path.read_bytes().endswith(b"\n")  # a torn line is on disk...
    assert list(store.read_jsonl(path)) == first + second[:1]  # ...and does not count
    assert store.repair_jsonl(path) == []  # a torn tail is cut, not reported as damage
    store.append_jsonl(path, second[1:], sealed=True)  # space freed: the rest, once each
    assert list(store.read_jsonl(path)) == first + second


def test_merge_that_fills_the_disk_leaves_nothing_built(tiny_ws, full_disk_in_merges, monkeypatch):
    recipe = load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws)
    full_disk_in_merges(20_000)  # the weights (~100 KB) do not fit
    with pytest.raises(BuildError) as caught:
        build(recipe, tiny_ws)
    message = str(caught.value)
    assert "disk full while building ties" in message and "needs about" in message and "free now" in message
    assert state_files(tiny_ws.root) == set()  # no marker, no temp folder, no config file

    monkeypatch.delenv("MERGEVAL_TEST_FULL_DISK_BYTES")  # space freed
    built = build(recipe, tiny_ws)
    assert not built.cached and store.damage(built.path) is None


def test_sweep_goes_on_past_a_merge_that_fills_the_disk_and_resumes(world, baseline, tmp_path,
                                                                      full_disk_in_merges, monkeypatch):
    ws = fresh_copy(world, tmp_path / "ws")
    full_disk_in_merges(20_000, recipe="ties_d08")
    failed = run_sweep(ws, check=False)
    assert failed.returncode == 1, failed.stderr[-3000:]
    run = run_json(run_dir_of(failed))
    [failure] = run["failures"]
    assert failure["model"] == "ties_d08" and failure["stage"] == "build"
    assert "disk full while building ties_d08" in failure["error"] and "free now" in failure["error"]
    assert "disk full while building ties_d08" in (run_dir_of(failed) / "report.md").read_text()
    graded = {r["model"] for r in map(json.loads, (run_dir_of(failed) / "results.jsonl").open())}
    assert graded == {"base", "spec_add", "spec_rev", "task_arithmetic_w10"}  # the others ran
    assert not any(".tmp-" in f or f.startswith("models/ties_d08") for f in state_files(ws)), state_files(ws)

    monkeypatch.delenv("MERGEVAL_TEST_FULL_DISK_BYTES")  # space freed: the same command again
    resumed = run_dir_of(run_sweep(ws))
    assert run_json(resumed)["stages"]["build"]["executed"] == 1
    assert run_json(resumed)["stages"]["answer"]["items_executed"] == N_ITEMS  # only the merge that failed
    same_results(resumed, baseline)


def test_answers_written_before_the_disk_filled_are_kept(world, baseline, tmp_path):
    ws = fresh_copy(world, tmp_path / "ws")
    answers = ws / ".mergeval" / "answers"
    with disk_fills_after(3_000, under=answers), pytest.raises(store.DiskFull) as caught:
        stages.run_direct(plan_of(ws))  # the first model's answers fill the disk part-way
    assert "disk full while writing" in str(caught.value) and "free" in str(caught.value)
    files = sorted(answers.rglob("*.jsonl"))
    saved = [r for f in files for r in store.read_jsonl(f)]
    assert 0 < len(saved) < N_MODELS * N_ITEMS  # whole records before the full disk are kept
    assert all(set(r) >= {"item_id", "answer"} for r in saved)  # and only whole ones count
    assert sum(not f.read_bytes().endswith(b"\n") for f in files) == 1  # one batch was cut mid-line
    assert not [f for f in state_files(ws) if f.endswith(".tmp")]

    run_dir = stages.run_direct(plan_of(ws))  # space freed
    run = run_json(run_dir)
    assert run["stages"]["answer"]["items_executed"] == N_MODELS * N_ITEMS - len(saved)
    assert run["stages"]["answer"]["items_cached"] == len(saved)
    same_results(run_dir, baseline)


@contextmanager
def tmpfs(where, size: str):
    """A real size-limited filesystem at `where`; skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield lambda new_size: subprocess.run(["mount", "-o", f"remount,size={new_size}", str(where)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_answers_on_a_real_full_filesystem(world, baseline, tmp_path):
    ws = fresh_copy(world, tmp_path / "ws")
    answers = ws / ".mergeval" / "answers"
    with tmpfs(answers, "8k") as resize:  # two 4 KiB pages: room for two models' answers
        with pytest.raises(store.DiskFull) as caught:
            stages.run_direct(plan_of(ws))
        assert "No space left" in str(caught.value.__cause__) and "disk full while writing" in str(caught.value)
        saved = [r for f in answers.rglob("*.jsonl") for r in store.read_jsonl(f)]
        assert 0 < len(saved) < N_MODELS * N_ITEMS
        assert not [f for f in state_files(ws) if f.endswith(".tmp")]
        resize("1m")  # space freed
        run_dir = stages.run_direct(plan_of(ws))
        assert run_json(run_dir)["stages"]["answer"]["items_cached"] == len(saved)
        same_results(run_dir, baseline)
