"""`mergeval leaderboard` and `mergeval export`: reading finished runs, never running anything.

    mergeval leaderboard                          # rank every comparable run under reports/
    mergeval leaderboard reports/ old-reports/ --like 20261125T154724Z_89f98f
    mergeval export 20261125T154724Z_89f98f --parquet     # → reports/<run>/results.parquet
"""

from __future__ import annotations

from pathlib import Path

import click

from mergeval.runs.lookup import RunNotFound, find_run


def _run_dir(ctx: click.Context, run: str) -> Path:
    try:
        return find_run(ctx.obj["workspace"], run)
    except RunNotFound as e:
        raise click.ClickException(str(e))


@click.command()
@click.argument("reports", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--like", metavar="RUN", help="Rank the runs comparable with RUN (default: the newest run).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def leaderboard(ctx: click.Context, reports: tuple[Path, ...], like: str | None, as_json: bool) -> None:
    """Rank the models of many runs together, with 95 % intervals.

    Only runs whose item suite and judge settings hash the same are ranked together; the others
    are listed with the reason they were left out. REPORTS: run folders or folders of runs
    (default: the workspace's reports/).
    """
    from mergeval.runs import leaderboard as lb

    paths = list(reports) or [ctx.obj["workspace"].reports]
    try:
        board = lb.build(paths, like=like)
    except ValueError as e:
        raise click.ClickException(str(e))
    click.echo(lb.to_json(board) if as_json else lb.render(board))


@click.command()
@click.argument("run")
@click.option("--parquet", "fmt", flag_value="parquet", help="Write Parquet (needs pyarrow).")
@click.option("--csv", "fmt", flag_value="csv", help="Write CSV.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: RUN/results.<format>.")
@click.pass_context
def export(ctx: click.Context, run: str, fmt: str | None, out: Path | None) -> None:
    """Write a run's results, one row per model × item, as a table file.

    RUN: a run folder, a run's name under reports/, or 'latest'. Read it back with
    pandas.read_parquet or mergeval.results.load.
    """
    from mergeval import results

    if fmt is None:
        raise click.UsageError("choose a format: --parquet or --csv")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise click.ClickException("--parquet needs pyarrow: pip install pyarrow")
    path = results.export(_run_dir(ctx, run), out, fmt)
    click.echo(str(path))
