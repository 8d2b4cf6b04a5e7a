"""SIGKILL a real `mergeval sweep` at seeded random points, over and over, then let it finish.

Each of at least N_KILLS runs is killed (with its merge workers; the temporary Prefect server
and the merge server are shared by the runs and outlive each, as a user's do) at a point
a seeded `random.Random` picks, placed on what the sweep is seen doing, not on the clock alone:
a delay into start-up cut short by the first sign of work (a merge's folder, an answer, the
report's folder), a delay
after a merge's folder appears cut short by that merge being complete, the moment the saved
answers or grades pass a seeded count, or the moment the report's temporary folder appears: so
each kill lands in the phase it is meant for on a fast box as on a slow one. The first
kills take the phases in pipeline order, so every phase is hit however fast or slow the
machine is; the rest are drawn at random. The next run starts at once on the same workspace.
After the last kill a run completes, and its results.jsonl and ranking.csv must equal an
uninterrupted sweep's. After every kill: the workspace lock is free, no run folder
of a killed run passes for a finished one, and at the end no item was answered or graded twice.

    MERGEVAL_KILL_SEED=1234 pytest -s tests/test_kill_loop.py      # another seed; -s prints the points
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mergeval.cli.main import main
from mergeval.core import store
from mergeval.core.lock import workspace_lock
from mergeval.core.workspace import Workspace
from mergeval.runs.lookup import RunNotFound, find_run
from tests import zygote
from tests.sweep_helpers import (
    copy_world,
    make_toy_world,
    results,
    run_dir_of,
    run_sweep,
    shrink_world,
    sweep_cmd,
    sweep_env,
)

SEED = int(os.environ.get("MERGEVAL_KILL_SEED", "7"))
N_KILLS = 20
MAX_RUNS = 32  # runs that finish before their kill point do not count as kills
RECIPES = ("ties_d08.yaml", "passthrough_add02_rev24.yaml")
ITEMS_PER_SKILL = 8
N_MODELS = 5  # base, spec_add, spec_rev and two merges
N_RECORDS = N_MODELS * 2 * ITEMS_PER_SKILL
ARGS = ("--max-new-tokens", "8")
# phase → (weight, longest delay in seconds after the phase is seen). Start-up is the
# interpreter, finding (or starting) the temporary Prefect server, validation and the lock (~6-8 s here); the merge
# server's imports come before the first merge. A delay never carries a kill past its phase
# (Sweep.phase_over). Answers and grades are killed on a count instead (no delay: on a fast box
# a whole model is answered in a fraction of a second).
PHASES = {"start-up": (1, 6.0), "merge": (2, 3.0), "answer": (3, 0.0), "grade": (2, 0.0), "report": (1, 0.0)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return shrink_world(make_toy_world(tmp_path_factory.mktemp("kills") / "ws"), RECIPES, ITEMS_PER_SKILL)


def lines(folder: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in folder.rglob("*.jsonl")) if folder.exists() else 0


def records(folder: Path, key: str) -> list[tuple[str, str]]:
    """(model folder, record key) of every whole record: two models may share a key."""
    return [(p.parent.name, r[key]) for p in sorted(folder.rglob("*.jsonl")) for r in store.read_jsonl(p)]


class Sweep:
    """What a sweep has left on disk, read cheaply enough to poll every 10 ms."""

    def __init__(self, ws: Path):
        self.ws, self.state = ws, ws / ".mergeval"

    def merges_built(self) -> int:
        return sum(1 for p in (self.state / "models").glob("[!.]*") if store.is_complete(p))

    def merging(self) -> set[str]:
        """The merges being written (or left half-written by a kill)."""
        return {p.name for p in (self.state / "models").glob(".tmp-*") if p.is_dir()}

    def answers(self) -> int:
        return lines(self.state / "answers")

    def grades(self) -> int:
        return lines(self.state / "grades")

    def writing_report(self) -> set[str]:
        """The run folders being written (or left half-written by a kill)."""
        return {p.name for p in (self.ws / "reports").glob(".tmp-*")}

    def available(self) -> list[str]:
        """Phases a run can still reach: work not done yet, plus start-up and the report."""
        todo = {"merge": self.merges_built() < len(RECIPES),
                "answer": len(set(records(self.state / "answers", "prompt_hash"))) < N_RECORDS,
                "grade": len(set(records(self.state / "grades", "grade_key"))) < N_RECORDS}
        return [p for p in PHASES if todo.get(p, True)]

    def trigger(self, phase: str, rng: random.Random):
        """A condition that turns true once this run is seen at a seeded point of `phase`."""
        merging, reporting = self.merging(), self.writing_report()  # what killed runs left: not this run
        answers = rng.randint(len(set(records(self.state / "answers", "prompt_hash"))) + 1, N_RECORDS) \
            if phase == "answer" else None
        grades = rng.randint(len(set(records(self.state / "grades", "grade_key"))) + 1, N_RECORDS) \
            if phase == "grade" else None
        return {
            "start-up": lambda: True,
            "merge": lambda: bool(self.merging() - merging),
            "answer": lambda: len(set(records(self.state / "answers", "prompt_hash"))) >= answers,
            "grade": lambda: len(set(records(self.state / "grades", "grade_key"))) >= grades,
            "report": lambda: bool(self.writing_report() - reporting),
        }[phase]

    def phase_over(self, phase: str):
        """A condition that turns true when a run seen in `phase` has moved past it: a delayed
        kill still waiting then fires at once, so it lands at the phase's end, not beyond."""
        merging, built, answers, reporting = self.merging(), self.merges_built(), self.answers(), self.writing_report()
        return {
            "start-up": lambda: bool(self.merging() - merging) or self.answers() > answers
            or bool(self.writing_report() - reporting),  # a run with nothing left goes straight to its report
            "merge": lambda: self.merges_built() > built,
        }.get(phase, lambda: False)


def run_and_kill(ws: Path, phase: str, delay: float, rng: random.Random, log: Path) -> str:
    """Start `mergeval sweep`; SIGKILL its process group `delay` s after `phase` is seen.

    Returns "killed" or "finished" (the run ended before the kill point)."""
    sweep = Sweep(ws)
    seen, over = sweep.trigger(phase, rng), sweep.phase_over(phase)
    with open(log, "wb") as out:
        proc = zygote.Popen(sweep_cmd(ws, *ARGS), env=sweep_env(ws), start_new_session=True,
                            stdout=out, stderr=subprocess.STDOUT)
        deadline = None
        try:
            while proc.poll() is None:
                if deadline is None and seen():
                    deadline = time.monotonic() + delay
                if deadline is not None and (time.monotonic() >= deadline or over()):
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return "killed"
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:  # e.g. a stale lock or a half-written file that broke the run
        raise AssertionError(f"run failed ({proc.returncode}):\n{log.read_text(errors='replace')[-4000:]}")
    return "finished"


def assert_nothing_half_done_counts(ws: Path) -> None:
    with workspace_lock(ws / ".mergeval"):  # free at once: a killed sweep leaves no stale lock
        pass
    for run in (ws / "reports").glob("[!.]*"):  # a folder without the dot prefix is a finished run
        assert all((run / f).is_file() for f in ("run.json", "results.jsonl", "ranking.csv", "report.md")), run
    try:
        assert not find_run(Workspace(ws), "latest").name.startswith(".")
    except RunNotFound:
        pass  # no finished run yet: `latest` says so rather than picking a killed one
    out = ws.parent / "latest.csv"
    exported = CliRunner().invoke(main, ["--workspace", str(ws), "export", "latest", "--csv", "--out", str(out)])
    if any((ws / "reports").glob("[!.]*")):  # the newest finished run, never a killed run's folder
        assert exported.exit_code == 0 and out.is_file(), exported.output
    else:
        assert exported.exit_code == 1 and "no finished run" in exported.output, exported.output


def test_seeded_kills_then_a_run_ends_as_an_uninterrupted_sweep(world, tmp_path):
    reference = run_dir_of(run_sweep(copy_world(world, tmp_path / "reference", with_state=False), *ARGS))
    ws = copy_world(world, tmp_path / "ws", with_state=False)
    sweep, rng = Sweep(ws), random.Random(SEED)
    print(f"\nkill loop seed {SEED} (MERGEVAL_KILL_SEED={SEED} to replay)")
    kills, runs, landed = 0, 0, set()
    while kills < N_KILLS:
        assert runs < MAX_RUNS, f"only {kills} kills in {runs} runs"
        phases = sweep.available()
        first = [p for p in PHASES if p in phases and p not in landed]  # pipeline order until each is hit
        phase = first[0] if first else rng.choices(phases, weights=[PHASES[p][0] for p in phases])[0]
        delay = round(rng.uniform(0.0, PHASES[phase][1]), 2)
        before = (sweep.merges_built(), sweep.answers(), sweep.grades())
        left_before = sweep.merging() | sweep.writing_report()
        outcome = run_and_kill(ws, phase, delay, rng, tmp_path / f"run-{runs:02d}.log")
        runs += 1
        after = (sweep.merges_built(), sweep.answers(), sweep.grades())
        half = sorted((sweep.merging() | sweep.writing_report()) - left_before)
        print(f"run {runs:2d}: {phase:8s} +{delay:4.2f}s → {outcome}; merges {before[0]}→{after[0]}, "
              f"answers {before[1]}→{after[1]}, grades {before[2]}→{after[2]}"
              + (f", left half-written: {', '.join(half)}" if half else ""))
        if outcome == "killed":
            kills += 1
            landed.add(phase)
        assert_nothing_half_done_counts(ws)

    final = run_dir_of(run_sweep(ws, *ARGS))
    assert landed == set(PHASES), f"the seeded points missed {set(PHASES) - landed}"
    state = ws / ".mergeval"
    answers, grades = records(state / "answers", "prompt_hash"), records(state / "grades", "grade_key")
    assert len(answers) == len(set(answers)) == N_RECORDS  # nothing answered twice
    assert len(grades) == len(set(grades)) == N_RECORDS  # nothing graded twice
    assert results(final) == results(reference)
    assert (final / "ranking.csv").read_text() == (reference / "ranking.csv").read_text()
