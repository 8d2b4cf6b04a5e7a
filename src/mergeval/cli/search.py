"""The recipe search and its grids.

    mergeval search merge_configs/search/toy_ties.yaml --trials 24      # TPE, seed 0
    mergeval search SPACE --trials 24 --sampler cmaes --seed 1          # ranges only: CMA-ES
    mergeval search SPACE --trials 24 --parallel 3                      # 3 trials at once
    mergeval search SPACE --trials 24 --pool gpus                       # trials on `mergeval worker`s
    mergeval search SPACE --dry-run                                     # check, list the dimensions
    mergeval expand SPACE --grid                                        # the grid as plain recipes

A broken space (an unknown key, an empty or inverted range, a range the method refuses at one
end) is refused with file:line and exit status 2 before Prefect starts or anything is built.
Run the same command again after a kill: finished trials are not run again (search/study.py).
"""

from __future__ import annotations

from pathlib import Path

import click

from mergeval.cli.common import check_judge, fail_on_input, report_outcome, workspace_of
from mergeval.core.errors import InputError
from mergeval.orchestration.flows import load_flow, prefect_defaults


def _plan(request):
    try:
        request.check()
        return request.plan()
    except ValueError as e:
        raise click.UsageError(str(e))
    except InputError as e:
        fail_on_input(e)


@click.command()
@click.argument("space")
@click.option("--trials", default=24, show_default=True, help="Finished trials wanted (a re-run adds only the missing ones).")
@click.option("--sampler", type=click.Choice(["tpe", "cmaes", "random"]), default="tpe", show_default=True,
              help="cmaes needs a space of ranges only (no choose:).")
@click.option("--seed", default=0, show_default=True, help="The sampler's seed.")
@click.option("--items", default="items/toy", show_default=True, help="Item suite folder (split into search and held-out parts).")
@click.option("--judge", default=None, help="Proctora settings.  [default: judge/toy/proctora.yaml for items/toy, "
              "else judge/proctora.yaml]")
@click.option("--finalists", default=3, show_default=True, help="Best trials ranked on the held-out items.")
@click.option("--holdout", default=0.5, show_default=True, help="Fraction of each skill's items held out.")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the search / held-out split.")
@click.option("--keep", default="top-3", show_default=True, help="Trial merges kept on disk: all, none or top-K.")
@click.option("--startup-trials", default=8, show_default=True, help="TPE: random trials before it models the scores.")
@click.option("--parallel", type=int, default=None,
              help="Trials at once: the next merges build while a trial is answered and graded.  "
              "[default: 1; with --pool, the pool's online workers, or 2]")
@click.option("--pool", default=None, help="A Prefect work pool: each trial a child flow run, taken by "
              "`mergeval worker` processes (needs a server: PREFECT_API_URL).")
@click.option("--retry-failed", is_flag=True, help="Ask the values of trials that failed in a stage again.")
@click.option("--batch-size", default=32, show_default=True, help="Items answered per generate() call.")
@click.option("--max-new-tokens", default=64, show_default=True, help="Longest answer, in tokens.")
@click.option("--dry-run", is_flag=True, help="Check the space, items and judge; list the dimensions; run nothing.")
@click.pass_context
def search(ctx: click.Context, space: str, dry_run: bool, **options) -> None:
    """Search the recipes of SPACE with Optuna; rank the best on held-out items."""
    from mergeval.orchestration.early_server import prefect_server_starting
    from mergeval.search.request import SearchRequest

    ws = workspace_of(ctx)
    request = SearchRequest.from_parameters(workspace=ws.root, space=space, **options)
    if dry_run:
        plan = _plan(request)
        for d in plan.space.dims:
            what = f"one of {d.labels}" if d.kind == "choice" else f"{d.kind} in [{d.low}, {d.high}]"
            click.echo(f"{plan.space.path}:{d.line}: {d.name}: {what}" + (f", step {d.step}" if d.step else ""))
        click.echo(f"{len(plan.search_items)} search items, {len(plan.heldout_items)} held-out; study {plan.study_name}")
        return
    prefect_defaults(ws)
    from mergeval.engine import stage_process

    # the trials' stages in a process of their own, forked before any thread starts (cli/sweep.py)
    stage_process.start(preload=not request.pool and request.generation.backend == "transformers")
    if request.pool:
        from mergeval.orchestration.deployments import need_server

        try:
            need_server(request.pool)  # before any work: workers cannot reach a temporary server
        except RuntimeError as e:
            raise click.UsageError(str(e))
    with prefect_server_starting():
        plan = _plan(request)
        check_judge(plan.base)
        flow = load_flow(ws, "search")
    outcome = flow(**request.parameters(), return_state=True).result(raise_on_failure=False)
    run_dir = report_outcome(outcome, "search")
    click.echo(f"        {run_dir / 'trials.csv'}, {run_dir / 'best.yaml'}")


@click.command()
@click.argument("space", type=click.Path(path_type=Path))
@click.option("--grid", is_flag=True, help="Every point of the grid (ranges need step: or grid:).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the recipes (default: merge_configs/<space stem>_grid).")
@click.pass_context
def expand(ctx: click.Context, space: Path, grid: bool, out: Path | None) -> None:
    """Write a space's recipes as plain files, named by their values (sweep the folder)."""
    from mergeval.search.grid import write_grid

    if not grid:
        raise click.UsageError("say which recipes to write: --grid (the only kind so far)")
    ws = workspace_of(ctx)
    try:
        written = write_grid(ws.resolve(space), ws, ws.resolve(out) if out else None)
    except InputError as e:
        fail_on_input(e)
    for path in written:
        click.echo(str(path))
    click.echo(f"{len(written)} recipe(s); sweep them: mergeval sweep {written[0].parent if written else out}")
