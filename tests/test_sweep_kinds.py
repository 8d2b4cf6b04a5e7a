"""A MoE and a two-stage recipe in one sweep with a plain recipe, on the quick toy zoo: each is
built, answers, is graded by the toy Proctora and ranked against its parents (base + experts;
the leaf models of every stage). The engine's stages in a plain loop (run_direct), no Prefect.
"""

from __future__ import annotations

import csv
import shutil

import pytest

from mergeval.answering.settings import GenerationSettings
from mergeval.core.workspace import Workspace
from mergeval.engine import stage_builds, stages
from mergeval.engine.plan import plan_sweep
from mergeval.inputs import model_dirs
from tests.sweep_helpers import REPO, make_toy_world, shrink_world

KINDS = ("moe_add_rev.yaml", "two_stage_ties_then_add.yaml")
ITEMS_PER_SKILL = 3
# names the plain recipe ties_d08 as a model: its first stage is ties_d08's merge, which is the
# two-stage recipe's first stage too (the same content): one stage build serves both
ON_TIES = """\
merge_method: slerp
base_model: ties_d08
models:
  - model: ties_d08
  - model: zoo/spec_add
parameters: {t: 0.3}
dtype: float32
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    ws = make_toy_world(tmp_path_factory.mktemp("kinds") / "ws")
    shrink_world(ws, ("ties_d08.yaml",), ITEMS_PER_SKILL)
    for name in KINDS:
        shutil.copy(REPO / "merge_configs" / "toy" / name, ws / "merge_configs" / "toy" / name)
    (ws / "merge_configs" / "toy" / "slerp_on_ties.yaml").write_text(ON_TIES)
    w = Workspace(ws)
    plan = plan_sweep(w, w.configs / "toy", w.items / "toy", w.judge_file, GenerationSettings(batch_size=4))
    return plan, stages.run_direct(plan)


def test_moe_and_two_stage_merges_are_ranked_with_their_parents(run_dir):
    plan, run = run_dir
    rows = {r["model"]: r for r in csv.DictReader((run / "ranking.csv").open())}
    assert set(rows) == {"base", "spec_add", "spec_rev", "ties_d08", "moe_add_rev", "two_stage_ties_then_add",
                         "slerp_on_ties"}
    for name in ("moe_add_rev", "two_stage_ties_then_add", "ties_d08", "slerp_on_ties"):
        r = rows[name]
        assert r["kind"] == "merge" and r["parents"] == "base + spec_add + spec_rev"
        assert int(r["n_scored"]) + int(r["n_unscored"]) == 2 * ITEMS_PER_SKILL
        assert r["best_parent"] in ("base", "spec_add", "spec_rev") and r["vs_best_parent"] != ""
    assert rows["moe_add_rev"]["method"] == "moe"
    assert rows["two_stage_ties_then_add"]["method"] == "ties → task_arithmetic"
    assert rows["slerp_on_ties"]["method"] == "ties → slerp"
    # the one stage both share was built once, for whichever came first
    assert [p.name for p in (plan.workspace.state / "stages").iterdir() if p.is_dir()] == [
        stage_builds.stage_dir(plan.workspace, stage_builds.stage_keys(
            plan.candidate("slerp_on_ties").recipe, {str(p): model_dirs.fingerprint(p) for p in
                                                     plan.candidate("slerp_on_ties").recipe.sources})[0]).name]
    comparisons = list(csv.DictReader((run / "comparisons.csv").open()))
    assert {c["parent"] for c in comparisons if c["merge"] == "moe_add_rev"} == {"base", "spec_add", "spec_rev"}


def test_the_report_shows_each_whole_recipe_file_and_the_cards_say_what_was_merged(run_dir):
    plan, run = run_dir
    html = (run / "report.html").read_text()
    two = plan.candidate("two_stage_ties_then_add")
    assert "name: ties_both" in html and "merge_method: task_arithmetic" in html  # both stages, one file
    assert "multi-stage: ties → task_arithmetic" in html and "<span class=\"tag\">moe · parents: base, spec_add, spec_rev" in html
    moe_card = (plan.candidate("moe_add_rev").path / "README.md").read_text()
    assert "mixture of experts (mergekit-moe, gate mode `hidden`)" in moe_card
    assert "the MLPs of `spec_add`, `spec_rev`" in moe_card and "positive_prompts" in moe_card
    two_card = (two.path / "README.md").read_text()
    assert "A multi-stage merge (2 stages: `ties → task_arithmetic`)" in two_card and "name: ties_both" in two_card


def test_a_sweep_after_it_builds_answers_and_grades_nothing_again(run_dir):
    """The same inputs through `mergeval sweep` (Prefect): every MoE, stage and merge is found done."""
    from tests.sweep_helpers import run_dir_of, run_json, run_sweep

    plan, first = run_dir
    stage_markers = sorted(p.stat().st_mtime_ns for p in (plan.workspace.state / "stages").glob("*/.mergeval-complete"))
    again = run_dir_of(run_sweep(plan.workspace.root))
    run = run_json(again)
    assert run["stages"]["build"]["executed"] == 0
    assert run["stages"]["answer"]["items_executed"] == run["stages"]["grade"]["items_executed"] == 0
    assert (again / "ranking.csv").read_text() == (first / "ranking.csv").read_text()
    assert sorted(p.stat().st_mtime_ns for p in (plan.workspace.state / "stages").glob("*/.mergeval-complete")) \
        == stage_markers and len(stage_markers) == 1
