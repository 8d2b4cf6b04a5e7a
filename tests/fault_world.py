"""A small toy world for the fault tests (disk full, damaged cache): the shipped zoo, two
recipes and a dozen items, built once per test session and copied per test."""

from __future__ import annotations

from pathlib import Path

from mergeval.answering.settings import GenerationSettings
from mergeval.core.workspace import Workspace
from mergeval.engine.plan import plan_sweep
from tests.sweep_helpers import copy_world, make_toy_world, shrink_world

FAULT_RECIPES = ("ties_d08", "task_arithmetic_w10")
ITEMS_PER_SKILL = 4
N_MODELS = 5  # base, spec_add, spec_rev and the two merges
N_ITEMS = 2 * ITEMS_PER_SKILL
_world: Path | None = None


def small_world(tmp_path_factory) -> Path:
    global _world
    if _world is None:
        ws = make_toy_world(tmp_path_factory.mktemp("fault-world") / "ws")
        _world = shrink_world(ws, tuple(f"{r}.yaml" for r in FAULT_RECIPES), ITEMS_PER_SKILL)
    return _world


def fresh_copy(world: Path, dst: Path) -> Path:
    return copy_world(world, dst, with_state=False)


def plan_of(ws: Path):
    """The engine's plan for the toy sweep, with the small batches the sweep tests use."""
    w = Workspace(ws)
    return plan_sweep(w, w.configs / "toy", w.items / "toy", w.judge_file, GenerationSettings(batch_size=4))


def state_files(ws: Path) -> set[str]:
    """Every file under .mergeval/ (temporary names included), relative to it."""
    state = ws / ".mergeval"
    return {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}


_baseline: Path | None = None


def baseline_run(world: Path, tmp_path_factory) -> Path:
    """The run folder of one uninterrupted, undamaged sweep of the small world (engine only):
    what every faulted-then-resumed sweep must reproduce."""
    global _baseline
    if _baseline is None:
        from mergeval.engine import stages

        ws = fresh_copy(world, tmp_path_factory.mktemp("fault-baseline") / "ws")
        _baseline = stages.run_direct(plan_of(ws))
    return _baseline


def same_results(run_dir: Path, baseline: Path, *, close: tuple[str, ...] = ()) -> None:
    """Byte-identical results.jsonl and ranking.csv; fields named in `close` (floats) may
    differ by float noise only (see test_corrupt_cache for the one that needs it)."""
    assert (run_dir / "ranking.csv").read_text() == (baseline / "ranking.csv").read_text()
    if not close:
        assert (run_dir / "results.jsonl").read_text() == (baseline / "results.jsonl").read_text()
        return
    import json

    import pytest

    got, want = ([json.loads(line) for line in (d / "results.jsonl").open()] for d in (run_dir, baseline))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in close} == {k: v for k, v in w.items() if k not in close}
        for k in close:
            assert g[k] == pytest.approx(w[k], rel=1e-6), (g["model"], g["item_id"], k)
