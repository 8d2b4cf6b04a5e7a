"""The commands that make things: the toy zoo, a validation, builds, a sweep.

    mergeval zoo                 # build the offline toy zoo (tiny real models) once
    mergeval validate merge_configs/mine items/mine
    mergeval build merge_configs/toy/ties_d08.yaml
    mergeval sweep               # merge → answer → grade → rank the toy recipes
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import click

from mergeval.cli.common import (
    check_judge,
    check_sweep_inputs,
    fail_on_input,
    report_outcome,
    sweep_options,
    sweep_request,
    workspace_of,
)
from mergeval.core.errors import InputError, SweepFailed
from mergeval.orchestration.flows import load_flow, prefect_defaults


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Default: <workspace>/zoo")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train", is_flag=True, help="Train from scratch even where a zoo with a manifest is "
              "(the shipped one), and write a new zoo/MANIFEST.json.")
@click.option("--quick", is_flag=True, help="A tiny training budget (for tests): real but weak models.")
@click.option("--no-judge", is_flag=True, help="Skip training the toy Proctora.")
@click.pass_context
def zoo(ctx: click.Context, out: Path | None, seed: int, train: bool, quick: bool, no_judge: bool) -> None:
    """The toy zoo: base, spec_add, spec_rev and the toy Proctora (shipped; or trained on the CPU).

    \b
    A zoo with a MANIFEST.json (the one in the repository) is used as shipped, once every
    file matches its sha256; --train trains it again here (about 5 minutes on 2 cores).
    """
    from mergeval.zoo import build_zoo, shipped

    ws = workspace_of(ctx)
    out = out or ws.zoo
    if shipped.has_manifest(out) and not train:
        problems = shipped.differences(out)
        if problems:
            for problem in problems:
                click.echo(problem, err=True)
            click.echo(f"{out} does not match {out / shipped.MANIFEST}: restore it (git checkout {out.name}) or "
                       "train it again with `mergeval zoo --train`", err=True)
            sys.exit(2)
        click.echo(f"zoo: the shipped models in {out} match {shipped.MANIFEST}; nothing to train")
        return
    if train:  # from scratch: a model left from an earlier recipe or seed must not be reused
        for name in shipped.MODELS:
            shutil.rmtree(out / name, ignore_errors=True)
    template = ws.toy_judge_file.parent / "prompt.txt"  # the toy judge learns this exact template
    paths = build_zoo(out, seed=seed, quick=quick, judge=not no_judge,
                      template=template.read_text(encoding="utf-8") if template.exists() else None,
                      log=click.echo)
    if train:
        click.echo(f"manifest: {shipped.write_manifest(out, seed)}")
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check recipes, search spaces, items and sweep files (and what they name) without merging
    anything (exit status 2 on any problem)."""
    from mergeval.engine.sweep_file import is_sweep_file, read_sweep_file
    from mergeval.inputs.validate import validate_paths
    from mergeval.search.space import read_space

    ws = workspace_of(ctx)
    targets = [ws.resolve(p) for p in paths] or [ws.configs, ws.items]

    def check_space(path: Path) -> list:  # what `mergeval search` checks of its space before any build
        return read_space(path, ws)[1]

    problems = validate_paths([t for t in targets if not is_sweep_file(t)], ws, check_space)
    for sweep_file in filter(is_sweep_file, targets):  # its own keys; then what it names
        try:
            params = read_sweep_file(sweep_file)
        except InputError as e:
            problems += e.problems
            continue
        named = [ws.resolve(params.get("configs", "merge_configs/toy")), ws.resolve(params.get("items", "items/toy"))]
        problems += validate_paths(named, ws, check_space)
    if problems:
        fail_on_input(InputError(problems))
    click.echo(f"ok: {', '.join(str(t) for t in targets)}")


@click.command("build")
@click.argument("recipes", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def build_cmd(ctx: click.Context, recipes: tuple[Path, ...]) -> None:
    """Build merges (default: merge_configs/toy) without answering or grading."""
    from mergeval.engine.build import BuildError, build
    from mergeval.inputs.recipes import load_recipes

    ws = workspace_of(ctx)
    try:
        loaded = load_recipes([ws.resolve(p) for p in recipes] or [ws.configs / "toy"], ws)
    except InputError as e:
        fail_on_input(e)
    failed = 0
    for recipe in loaded:
        try:
            built = build(recipe, ws)
        except BuildError as e:
            failed += 1
            click.echo(f"FAILED {recipe.name}: {e}", err=True)
            continue
        state = "cached" if built.cached else f"built in {built.seconds:.1f}s"
        click.echo(f"{recipe.name}: {state} → {built.path}")
    sys.exit(1 if failed else 0)


@click.command()
@sweep_options
@click.option("--pool", default=None, help="A Prefect work pool: one child flow run per model, taken by "
              "`mergeval worker` processes (needs a server: PREFECT_API_URL).")
@click.option("--sequential", is_flag=True, help="Do not build the next merge while a model is answered.")
@click.pass_context
def sweep(ctx: click.Context, pool: str | None, sequential: bool, **options) -> None:
    """Merge every recipe in CONFIGS, answer and grade every item, rank, write the report.

    CONFIGS may be a sweep file (sweeps/toy.yaml; its keys: mergeval/engine/sweep_file.py)
    holding everything the sweep needs; the options given here override it.

    \b
    A re-run that finds every answer and grade saved, with no Prefect server configured, only
    ranks and writes the run folder: Prefect's temporary server would show it to no one.
    """
    from mergeval.engine import merge_server, stage_process, stages
    from mergeval.orchestration.early_server import prefect_server_starting, server_may_be_configured
    from mergeval.runs.lookup import finished_runs

    request = sweep_request(ctx, pool=pool, overlap=False if sequential else None, **options)
    prefect_defaults(request.ws)
    plan = None
    if finished_runs(request.ws.reports) and not server_may_be_configured():
        # Most likely a re-run: plan first (remembered checks import no mergekit), and if
        # nothing is left, rank without importing Prefect at all (≈3 s of a ≈10 s re-run).
        plan = check_sweep_inputs(request)
        if stages.nothing_left(plan):
            report_outcome(rank_finished_sweep(request, plan), "sweep")
            return
    # The stages' own process (engine/stage_process.py), forked before this one starts a thread;
    # it imports what models answer with while this one imports Prefect.
    stage_process.start(preload=request.generation.backend == "transformers")
    # The inputs are checked on a thread of their own from the start: Prefect's import and the
    # server's lease fill that thread's waits (the merge server's recipe checks, reading files).
    planning = None if plan else in_background(check_sweep_inputs, request)
    try:
        with prefect_server_starting() as server:  # on the other core, while the inputs are checked
            flow = load_flow(request.ws)  # Prefect's and the flow's imports, while `planning` checks
            plan = plan or planning.result()  # bad input: its SystemExit (status 2) or usage error
            if server.temporary and stages.nothing_left(plan):
                raise NothingLeft  # the server is stopped at once: nobody could watch it
            if not request.pool and any(stages.needs_build(plan, c) for c in plan.candidates):
                merge_server.warm()  # mergekit's import, on the other core, while Prefect starts
            check_judge(plan)
            request.hand_over(plan)  # the flow's own request.plan() takes it
    except NothingLeft:
        outcome = rank_finished_sweep(request, plan)
    else:
        outcome = flow(**request.parameters(), return_state=True).result(raise_on_failure=False)
    report_outcome(outcome, "sweep")


def in_background(fn, *args) -> Future:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)  # its one thread ends with fn


class NothingLeft(Exception):
    """Raised inside the server's start-up block to stop it: the sweep has only ranking left."""


def rank_finished_sweep(request, plan) -> str | SweepFailed:
    """The run folder of a sweep whose every stage is saved: the engine's own loop, which finds
    each stage done (counted as cached, as Prefect would), prunes for --keep and ranks; or, as
    the flow would end, the failure of a mostly unscored ranking."""
    from mergeval.core.lock import workspace_lock
    from mergeval.engine import stages

    with workspace_lock(request.ws.state):  # one sweep per workspace, as in the flow
        run_dir = stages.run_direct(plan, request.settings_record(plan), log=click.echo, keep=request.keep)
    try:
        stages.check_mostly_scored(run_dir)
    except SweepFailed as e:
        return e
    return str(run_dir)
