"""`mergeval search` end to end on the shipped toy zoo (zoo/, nothing trained), 10 items per skill.

Every search here is a real `mergeval search` process with its own embedded Prefect server:
trials are built by mergekit, answered by the zoo's models, graded by the toy Proctora.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import zygote
from tests.sweep_helpers import REPO, copy_toy_judge, copy_world, run_dir_of, run_json, run_sweep, sweep_env

SPACE = "merge_configs/search/toy_ties.yaml"
ARGS = ("--trials", "2", "--finalists", "2", "--batch-size", "8", "--startup-trials", "1")


ITEMS_PER_SKILL = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The shipped zoo (a link: the committed, trained models), the first items of each toy skill,
    the toy Proctora as the workspace's judge, the toy space."""
    ws = tmp_path_factory.mktemp("search") / "ws"
    (ws / "merge_configs" / "search").mkdir(parents=True)
    (ws / "merge_configs" / "search" / "toy_ties.yaml").write_text((REPO / SPACE).read_text())
    (ws / "zoo").symlink_to(REPO / "zoo")
    copy_toy_judge(ws / "judge")
    (ws / "items" / "toy").mkdir(parents=True)
    shutil.copy(REPO / "items" / "toy" / "suite.yaml", ws / "items" / "toy" / "suite.yaml")
    for skill in ("add", "rev"):
        (ws / "items" / "toy" / skill).mkdir()
        for item in sorted((REPO / "items" / "toy" / skill).glob("*.txt"))[:ITEMS_PER_SKILL]:
            shutil.copy(item, ws / "items" / "toy" / skill / item.name)
    return ws


def search_cmd(ws: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), "search", *args]


def run_search(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return zygote.run(search_cmd(ws, *args), env=sweep_env(ws), capture_output=True, text=True, timeout=900)


def study_trials(ws: Path) -> list:
    """The trials in the workspace's study storage, read with Optuna itself."""
    import optuna

    [journal] = (ws / ".mergeval" / "search").glob("*/journal.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    [summary] = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def searched(world):
    proc = run_search(world, SPACE, *ARGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return run_dir_of(proc)


def test_a_broken_space_is_refused_before_any_build(world, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    broken = ws / "merge_configs" / "search" / "broken.yaml"
    broken.write_text((REPO / SPACE).read_text().replace("{search: [0.5, 1.0], step: 0.1}", "{search: [1.0, 0.4]}", 1)
                      .replace("normalize: false", "normalize: {search: [0, 1]}"))
    proc = run_search(ws, "merge_configs/search/broken.yaml", *ARGS)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = (REPO / SPACE).read_text().splitlines()
    density = 1 + next(i for i, line in enumerate(lines) if "density:" in line)
    normalize = 1 + next(i for i, line in enumerate(lines) if "normalize:" in line)
    assert f"{broken}:{density}: models.0.parameters.density: an inverted range [1.0, 0.4]" in proc.stderr
    assert "nothing was run" in proc.stderr
    assert not (ws / ".mergeval" / "models").exists() and not (ws / ".mergeval" / "search").exists()
    assert not (ws / "reports").exists()
    broken.write_text((REPO / SPACE).read_text().replace("normalize: false", "normalize: {search: [0, 1]}"))
    proc = run_search(ws, "merge_configs/search/broken.yaml", *ARGS)
    assert proc.returncode == 2 and f"{broken}:{normalize}: parameters.normalize: ties declares normalize a bool" \
        in proc.stderr, proc.stderr[-3000:]


def test_a_search_writes_trials_best_and_the_heldout_ranking(world, searched):
    with open(searched / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert [t["number"] for t in trials] == ["0", "1"] and {t["state"] for t in trials} == {"COMPLETE"}
    assert all(t["score"] and float(t["seconds"]) > 0 and t["models.0.parameters.weight"] for t in trials)
    run = run_json(searched)
    search = run["search"]
    held = set(search["heldout_items"])
    assert held and not held & set(search["search_items"]) and len(held) == 10  # half of 20
    with open(searched / "ranking.csv") as f:
        ranking = list(csv.DictReader(f))
    finalists = {t["recipe"] for t in trials}
    assert {r["model"] for r in ranking} == {"base", "spec_add", "spec_rev"} | finalists
    assert all(int(r["n_scored"]) + int(r["n_unscored"]) == 10 for r in ranking)  # the held-out items only
    assert all(r["ci_low"] != "" for r in ranking if r["n_scored"] != "0")
    results = [json.loads(line) for line in (searched / "results.jsonl").read_text().splitlines()]
    assert {r["item_id"] for r in results} == held
    best = (searched / "best.yaml").read_text()
    assert best.startswith("# best.yaml: the best of 2 finalist(s)") and "merge_method: ties" in best
    assert search["best"] in finalists and (searched / "report.md").exists() and (searched / "search.md").exists()


def test_the_same_command_again_runs_no_trial(world, searched):
    before = [(t.number, t.datetime_complete) for t in study_trials(world)]
    proc = run_search(world, SPACE, *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_json(run_dir_of(proc))
    assert run["search"]["trials_run_now"] == []
    assert all(run["stages"][s]["items_executed"] == 0 for s in ("build", "answer", "grade")), run["stages"]
    assert [(t.number, t.datetime_complete) for t in study_trials(world)] == before


def test_best_yaml_validates_and_sweeps_like_any_recipe(world, searched, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    (ws / "merge_configs" / "best").mkdir()
    (ws / "merge_configs" / "best" / "best.yaml").write_text((searched / "best.yaml").read_text())
    env = sweep_env(ws)
    ok = zygote.run([sys.executable, "-m", "mergeval.cli.main", "--workspace", str(ws), "validate",
                     "merge_configs/best"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    with open(run_dir_of(run_sweep(ws, "merge_configs/best")) / "ranking.csv") as f:
        assert "best" in {r["model"] for r in csv.DictReader(f)}


def test_a_search_killed_mid_trial_resumes_without_rerunning_finished_trials(world, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    trials_dir = ws / ".mergeval" / "search"
    proc = zygote.Popen(search_cmd(ws, SPACE, *ARGS), env=sweep_env(ws), start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:  # the second trial's recipe is written: trial 0 is finished, trial 1 has begun
        while len(list(trials_dir.glob("*/trials/*.yaml"))) < 2:
            assert proc.poll() is None, "the search finished before the kill point"
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in study_trials(ws)}
    done = {n for n, t in before.items() if t.state.name == "COMPLETE"}
    assert done == {0} and before[1].state.name == "RUNNING"

    proc = run_search(ws, SPACE, *ARGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run = run_json(run_dir_of(proc))
    after = {t.number: t for t in study_trials(ws)}
    assert after[0].datetime_complete == before[0].datetime_complete and after[0].value == before[0].value
    assert after[1].state.name == "FAIL" and after[1].user_attrs["interrupted"]
    assert after[2].state.name == "COMPLETE" and after[2].params == before[1].params  # asked again
    assert after[2].user_attrs["retry_of"] == 1
    assert run["search"]["trials_run_now"] == [2] and run["search"]["asked_again"] == [1]
    with open(run_dir_of(proc) / "trials.csv") as f:
        assert [(t["number"], t["state"]) for t in csv.DictReader(f)] == [("0", "COMPLETE"), ("1", "FAIL"),
                                                                          ("2", "COMPLETE")]


def test_cmaes_is_refused_for_a_space_with_a_choice(world, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    (ws / "merge_configs" / "search" / "toy_methods.yaml").write_text(
        (REPO / "merge_configs" / "search" / "toy_methods.yaml").read_text())
    proc = run_search(ws, "merge_configs/search/toy_methods.yaml", "--sampler", "cmaes", "--dry-run")
    assert proc.returncode == 2 and "--sampler cmaes needs a space of ranges only" in proc.stderr, proc.stderr[-2000:]
    proc = run_search(ws, "merge_configs/search/toy_methods.yaml", "--dry-run")
    assert proc.returncode == 0 and "merge_method: one of ['ties', 'task_arithmetic']" in proc.stdout, proc.stderr


def test_parallel_trials_overlap_and_each_is_asked_once(world, tmp_path):
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    proc = run_search(ws, SPACE, "--trials", "2", "--parallel", "2", "--finalists", "1", "--batch-size", "8",
                      "--startup-trials", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    trials = sorted(study_trials(ws), key=lambda t: t.number)
    assert [(t.number, t.state.name) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    # trial 1 was asked (and its merge started) before trial 0 was told its score: two at once
    assert trials[1].datetime_start < trials[0].datetime_complete, [(t.datetime_start, t.datetime_complete)
                                                                    for t in trials]
    run = run_json(run_dir_of(proc))
    assert sorted(run["search"]["trials_run_now"]) == [0, 1] and run["settings"]["search"]["parallel"] == 2
    distinct = {t.user_attrs["recipe"] for t in trials}
    assert run["stages"]["build"]["executed"] == len(distinct)  # a repeat waits for its twin, then is cached
    with open(run_dir_of(proc) / "trials.csv") as f:
        assert all(float(r["score"]) >= 0 for r in csv.DictReader(f))
