"""The whole sweep, end to end, on the shipped toy zoo: no fakes anywhere in the path.

Every sweep here is a real `mergeval sweep` process with its own embedded Prefect server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import zygote
from tests.fault_world import same_results
from tests.sweep_helpers import (
    RECIPES,
    copy_world,
    kill_when,
    line_counts,
    make_toy_world,
    partly_written,
    results,
    run_dir_of,
    run_json,
    run_sweep,
    shrink_world,
    sweep_cmd,
    sweep_env,
)

ITEMS_PER_SKILL = 20  # 40 of the 200 toy items: every batch size and kill point still has room
N_ITEMS = 2 * ITEMS_PER_SKILL
N_MODELS = 6  # base, spec_add, spec_rev + three merges


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shrink_world(make_toy_world(tmp_path_factory.mktemp("toy") / "ws"), RECIPES, ITEMS_PER_SKILL)


@pytest.fixture(scope="module")
def baseline(world):
    """One uninterrupted sweep; its run folder is what every other sweep must reproduce."""
    return run_dir_of(run_sweep(world))


def stage(run: dict, name: str) -> dict:
    return run["stages"][name]


def test_sweep_writes_the_run_folder(baseline):
    run = run_json(baseline)
    rows = results(baseline)
    assert len(rows) == N_MODELS * N_ITEMS
    assert {r["model"] for r in rows} == {"base", "spec_add", "spec_rev", "ties_d08", "task_arithmetic_w10",
                                         "passthrough_add02_rev24"}
    assert all(r["judge_replies"] and r["judge_prompt"] for r in rows)  # audit trail kept
    assert stage(run, "build")["executed"] == 3
    assert stage(run, "answer")["items_executed"] == N_MODELS * N_ITEMS
    ranking = (baseline / "ranking.csv").read_text().splitlines()
    assert ranking[0].startswith("model,rank,score,add,rev,n_scored,n_unscored")
    assert len(ranking) == 1 + N_MODELS
    report = (baseline / "report.md").read_text()
    assert "## Ranking" in report and "## The winner's recipe" in report


def test_same_command_again_executes_nothing(world, baseline):
    run_dir = run_dir_of(run_sweep(world))
    run = run_json(run_dir)
    for name in ("build", "answer", "grade"):
        assert stage(run, name)["executed"] == 0, (name, stage(run, name))
        assert stage(run, name)["items_executed"] == 0
    assert results(run_dir) == results(baseline)
    assert (run_dir / "ranking.csv").read_text() == (baseline / "ranking.csv").read_text()


def test_edits_rerun_only_what_they_touch(world, baseline, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=True)

    item = ws / "items" / "toy" / "add" / "add_000.txt"
    item.write_text(item.read_text().replace("The answer must be", "The reply must be"))
    run = run_json(run_dir_of(run_sweep(ws)))
    assert stage(run, "build")["executed"] == 0
    assert stage(run, "answer")["items_executed"] == 0  # the question did not change
    assert stage(run, "grade")["items_executed"] == N_MODELS

    item.write_text(item.read_text().replace("what is", "what is the sum"))
    run = run_json(run_dir_of(run_sweep(ws)))
    assert stage(run, "build")["executed"] == 0
    assert stage(run, "answer")["items_executed"] == N_MODELS  # one item, every model
    assert stage(run, "grade")["items_executed"] == N_MODELS

    recipe = ws / "merge_configs" / "toy" / "ties_d08.yaml"
    recipe.write_text(recipe.read_text().replace("density: 0.8", "density: 0.7"))
    run = run_json(run_dir_of(run_sweep(ws)))
    assert stage(run, "build")["executed"] == 1
    assert stage(run, "answer")["items_executed"] == N_ITEMS
    assert stage(run, "grade")["items_executed"] == N_ITEMS

    judge = ws / "judge" / "proctora.yaml"
    judge.write_text(judge.read_text().replace("retries_unparseable: 2", "retries_unparseable: 1"))
    run = run_json(run_dir_of(run_sweep(ws)))
    assert stage(run, "build")["executed"] == 0
    assert stage(run, "answer")["items_executed"] == 0
    assert stage(run, "grade")["items_executed"] == N_MODELS * N_ITEMS


def test_kill_and_resume_matches_an_uninterrupted_sweep(world, baseline, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    state = ws / ".mergeval"
    kill_points = {
        "mid-answer": partly_written(state / "answers", N_ITEMS),
        "mid-grade": partly_written(state / "grades", N_ITEMS),
        # at once: a warm merge server finishes a tiny merge in under a second
        "mid-merge": lambda: any((state / "models").glob(".tmp-*")),
    }
    for point, condition in kill_points.items():
        before_answers = line_counts(state / "answers")
        before_grades = line_counts(state / "grades")
        kill_when(ws, condition)
        # what finished before this kill is still there, untouched
        after_answers, after_grades = line_counts(state / "answers"), line_counts(state / "grades")
        assert all(after_answers[k] >= n for k, n in before_answers.items()), point
        assert all(after_grades[k] >= n for k, n in before_grades.items()), point

    saved_answers = sum(line_counts(state / "answers").values())
    saved_grades = sum(line_counts(state / "grades").values())
    built = {p.name for p in (state / "models").iterdir() if (p / ".mergeval-complete").exists()}
    final = run_dir_of(run_sweep(ws))
    run = run_json(final)
    assert stage(run, "answer")["items_executed"] == N_MODELS * N_ITEMS - saved_answers
    assert stage(run, "grade")["items_executed"] == N_MODELS * N_ITEMS - saved_grades
    assert stage(run, "build")["executed"] == 3 - len(built)
    # no item answered or graded twice: every line of every store is a distinct item
    assert sum(line_counts(state / "answers").values()) == N_MODELS * N_ITEMS
    assert sum(line_counts(state / "grades").values()) == N_MODELS * N_ITEMS
    assert results(final) == results(baseline)
    assert (final / "ranking.csv").read_text() == (baseline / "ranking.csv").read_text()


def test_shared_files_never_hold_the_items_or_their_canary(world, baseline, tmp_path):
    """report.md, ranking.csv, comparisons.csv and the model cards are made to be shared: no
    item's question, criterion (nor a line of either) or canary may appear in them."""
    from mergeval.inputs.items import load_items
    from mergeval.report.run_folder import SHARED_FILES

    ws = copy_world(world, tmp_path / "ws", with_state=True)
    canary = "MERGEVAL CANARY toy 5c0e2a71-9b3d-4f6e-8a2c-1d7b9e0f3a64"
    for path in sorted((ws / "items" / "toy").rglob("*.txt"))[::10]:
        path.write_text(path.read_text().replace("---\n", f"---\ncanary: {canary}\n", 1))
    run_dir = run_dir_of(run_sweep(ws))
    run = run_json(run_dir)
    # the canary is not part of what a model is asked, nor of what the judge grades
    assert stage(run, "answer")["items_executed"] == 0 and stage(run, "grade")["items_executed"] == 0

    items = load_items(ws / "items" / "toy")
    texts = [t for it in items for t in (it.question, it.criterion) if t]
    needles = {canary, *texts, *(line for t in texts for line in t.splitlines() if len(line.strip()) >= 16)}
    cards = sorted((ws / ".mergeval" / "models").glob("*/README.md"))
    assert len(cards) == 3  # --keep all: every merge kept, every one carded
    for shared in [run_dir / name for name in SHARED_FILES] + cards:
        text = shared.read_text()
        assert not [n for n in needles if n in text], shared
    # the needles are right: the private page does show the items
    assert all(it.question in (run_dir / "report.html").read_text() for it in items[:5])


def test_the_default_keep_prunes_and_an_edited_item_rebuilds_only_the_pruned_merge(world, tmp_path):
    """What users run: no --keep, so the top 3 merges keep their weights. A fourth merge is
    pruned; an edited item later needs it again, so it alone is rebuilt, and the log, run.json
    and report.md say how many merges were rebuilt and why."""
    import shutil

    from tests.sweep_helpers import REPO

    ws = copy_world(world, tmp_path / "ws", with_state=False)
    shutil.copy(REPO / "merge_configs" / "toy" / "linear_half.yaml", ws / "merge_configs" / "toy")
    recipes = ("ties_d08.yaml", "task_arithmetic_w10.yaml", "passthrough_add02_rev24.yaml", "linear_half.yaml")
    shrink_world(ws, recipes, items_per_skill=10)
    merges = {r.removesuffix(".yaml") for r in recipes}

    def on_disk() -> set[str]:
        models = ws / ".mergeval" / "models"
        return {p.name.rsplit("-", 1)[0] for p in models.glob("[!.]*") if (p / "config.json").exists()}

    first = run_dir_of(run_sweep(ws, keep=None))
    run = run_json(first)
    assert run["settings"]["keep"] == "top-3"
    assert stage(run, "build")["executed"] == 4
    ranked = [r for r in (first / "ranking.csv").read_text().splitlines()[1:] if r.split(",")[0] in merges]
    pruned = ranked[-1].split(",")[0]  # the lowest-ranked merge
    assert on_disk() == merges - {pruned}
    assert stage(run, "build")["rebuilt"] == 0

    item = ws / "items" / "toy" / "add" / "add_000.txt"
    item.write_text(item.read_text().replace("what is", "what is the sum"))
    proc = run_sweep(ws, keep=None)
    run = run_json(run_dir_of(proc))
    assert stage(run, "build")["executed"] == 1 and stage(run, "build")["rebuilt"] == 1
    assert stage(run, "answer")["items_executed"] == 3 + 4  # the edited item, once per model
    assert f"build {pruned}: built in" in proc.stdout + proc.stderr
    assert "rebuilt: its weights were pruned after an earlier run, and 1 of 20 items have no saved answer" \
        in proc.stdout + proc.stderr
    assert "1 merge(s) were built again" in (run_dir_of(proc) / "report.md").read_text()
    assert len(on_disk()) == 3


def test_the_shipped_toy_sweep_file_runs_what_make_demo_runs(world, baseline, tmp_path):
    """`mergeval sweep sweeps/toy.yaml` in the repository's layout (judge/toy/ beside the real
    judge): the toy judge, the toy suite's answer length; the same work as the plain sweep, so
    everything comes from the caches."""
    import shutil

    from tests.sweep_helpers import REPO

    ws = copy_world(world, tmp_path / "ws", with_state=True)
    shutil.copytree(REPO / "judge" / "toy", ws / "judge" / "toy")
    shutil.copytree(REPO / "sweeps", ws / "sweeps")
    for name in ("proctora.yaml", "prompt.txt"):  # the real judge's files, as in the repository
        shutil.copy(REPO / "judge" / name, ws / "judge" / name)
    run = run_json(run_dir_of(run_sweep(ws, "sweeps/toy.yaml")))
    assert run["settings"]["judge"] == "judge/toy/proctora.yaml" and run["settings"]["keep"] == "all"  # flag wins
    for name in ("build", "answer", "grade"):
        assert stage(run, name)["items_executed"] == 0, (name, stage(run, name))


def test_a_stage_whose_process_dies_fails_its_model_alone_and_the_same_command_resumes(world, baseline, tmp_path):
    """The stages run in a process of their own (engine/stage_process.py). When it dies (a crash
    in a kernel, the OOM killer: SIGKILL here) mid-answer, that model's task fails, the sweep goes
    on in its own process, ranks the others and exits 1; the same command again runs the rest."""
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    mid_answer = partly_written(ws / ".mergeval" / "answers", N_ITEMS)
    sweep = zygote.Popen(sweep_cmd(ws, "--sequential"), env=sweep_env(ws), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not mid_answer():
        assert sweep.poll() is None and time.monotonic() < deadline, "no answer was written part-way"
        time.sleep(0.01)
    [worker] = [pid for pid in children(sweep.pid) if cmdline(pid) == cmdline(sweep.pid)]  # forked: same argv
    os.kill(worker, signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, err[-3000:]
    run_dir = run_dir_of(subprocess.CompletedProcess(sweep.args, 1, out, err))
    [failure] = run_json(run_dir)["failures"]
    assert failure["stage"] in ("answer", "grade")  # answering, or its last batch was written just before
    assert f"the stage process (pid {worker}) ended: killed by SIGKILL" in failure["error"]
    graded = {r["model"] for r in results(run_dir)}
    assert graded == {r["model"] for r in results(baseline)} - {failure["model"]}

    resumed = run_dir_of(run_sweep(ws))
    assert stage(run_json(resumed), failure["stage"])["executed"] == 1  # that model's, alone
    # graded last this time, the model finds other models' judge calls cached in another order:
    # judge_weighted moves in the 9th digit (tests/test_workers.py says why); nothing else may
    same_results(resumed, baseline, close=("judge_weighted",))


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()
