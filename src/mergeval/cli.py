"""mergeval's command line: a thin front door over the engine.

    mergeval zoo                 # build the offline toy zoo (tiny real models) once
    mergeval sweep               # merge → answer → grade → rank the toy recipes
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import click

from .cli_common import check_judge, check_sweep_inputs, fail_on_input, sweep_options
from .errors import InputError, SweepFailed
from .workspace import Workspace

def _workspace(ctx: click.Context) -> Workspace:
    return ctx.obj["workspace"]


@click.group(
    epilog="""\b
Quick start (offline, on a CPU):
  mergeval zoo          # train the toy zoo: base, two specialists, the toy Proctora
  mergeval sweep        # merge every recipe in merge_configs/toy, grade, rank
\b
Your own models:
  mergeval validate merge_configs/mine items/mine
  mergeval sweep merge_configs/mine --items items/mine --judge judge/proctora.yaml
"""
)
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path),
              help="Workspace folder (default: the nearest folder upward with merge_configs/).")
@click.pass_context
def main(ctx: click.Context, workspace: Path | None) -> None:
    """Merge LLMs with mergekit and grade every merge on your private item suite."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = Workspace(workspace.resolve()) if workspace else Workspace.find()


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Default: <workspace>/zoo")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A tiny training budget (for tests): real but weak models.")
@click.option("--no-judge", is_flag=True, help="Skip training the toy Proctora.")
@click.pass_context
def zoo(ctx: click.Context, out: Path | None, seed: int, quick: bool, no_judge: bool) -> None:
    """Train the toy zoo on the CPU: base, spec_add, spec_rev and the toy Proctora."""
    from .zoo import build_zoo

    ws = _workspace(ctx)
    template = (ws.judge_dir / "prompt.txt")
    paths = build_zoo(out or ws.zoo, seed=seed, quick=quick, judge=not no_judge,
                      template=template.read_text(encoding="utf-8") if template.exists() else None,
                      log=click.echo)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Check recipes and items without merging anything (exit status 2 on any problem)."""
    from .validate import validate_paths

    ws = _workspace(ctx)
    targets = [ws.resolve(p) for p in paths] or [ws.configs, ws.items]
    problems = validate_paths(targets, ws)
    if problems:
        fail_on_input(InputError(problems))
    click.echo(f"ok: {', '.join(str(t) for t in targets)}")


@main.command("build")
@click.argument("recipes", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def build_cmd(ctx: click.Context, recipes: tuple[Path, ...]) -> None:
    """Build merges (default: merge_configs/toy) without answering or grading."""
    from .build import BuildError, build
    from .recipes import load_recipes

    ws = _workspace(ctx)
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


def prefect_defaults(ws: Workspace) -> None:
    """Embedded-Prefect settings that work offline; a user's own settings win."""
    defaults = {
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "mergekit,transformers",
        "PREFECT_LOCAL_STORAGE_PATH": str(ws.state / "prefect-results"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def load_flow(ws: Workspace, name: str = "sweep"):
    """flows/<name>.py from the workspace, else the copy beside this package's source."""
    candidates = [ws.root / "flows" / f"{name}.py", Path(__file__).resolve().parents[2] / "flows" / f"{name}.py"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise click.ClickException(f"no flows/{name}.py in {ws.root}")
    spec = importlib.util.spec_from_file_location(f"mergeval_flows_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@main.command()
@sweep_options
@click.option("--pool", default=None, help="A Prefect work pool: one child flow run per model, taken by "
              "`mergeval worker` processes (needs a server: PREFECT_API_URL).")
@click.option("--sequential", is_flag=True, help="Do not build the next merge while a model is answered.")
@click.pass_context
def sweep(ctx: click.Context, configs: str, items: str, judge: str, keep: str, batch_size: int,
          max_new_tokens: int, trust_remote_code: tuple[str, ...], pool: str | None, sequential: bool) -> None:
    """Merge every recipe in CONFIGS, answer and grade every item, rank, write the report."""
    from .early_server import prefect_server_starting

    ws = _workspace(ctx)
    prefect_defaults(ws)
    with prefect_server_starting():  # on the other core, while the inputs are checked
        plan = check_sweep_inputs(ws, configs, items, judge, keep, batch_size, max_new_tokens, trust_remote_code)
        check_judge(plan)
        flow = load_flow(ws)
    state = flow(configs=configs, items=items, judge=judge, keep=keep, workspace=str(ws.root),
                 batch_size=batch_size, max_new_tokens=max_new_tokens, pool=pool, overlap=not sequential,
                 trust_remote_code=list(trust_remote_code),
                 return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, SweepFailed):
        summarize(Path(outcome.run_dir))
        click.echo(f"\n{outcome}", err=True)
        sys.exit(1)
    if isinstance(outcome, BaseException):
        click.echo(f"sweep failed: {outcome}", err=True)
        sys.exit(1)
    summarize(Path(outcome))


def summarize(run_dir: Path) -> None:
    import pandas as pd

    ranking = pd.read_csv(run_dir / "ranking.csv")
    cols = [c for c in ("rank", "model", "score", "vs_best_parent", "n_unscored", "method") if c in ranking]
    click.echo("\n" + ranking[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    click.echo(f"\nreport: {run_dir / 'report.md'}")
    click.echo(f"        {run_dir / 'report.html'} (open in a browser)")


# Commands that live in their own modules are added here, explicitly (no registration by import).
from .cli_judge import calibrate, regrade, rubric  # noqa: E402

main.add_command(regrade)
main.add_command(calibrate)
main.add_command(rubric)

from .cli_report import export, leaderboard  # noqa: E402

main.add_command(leaderboard)
main.add_command(export)

from .cli_prefect import schedule, server, worker  # noqa: E402
from .cli_canary import canary  # noqa: E402

main.add_command(canary)

main.add_command(server)
main.add_command(schedule)
main.add_command(worker)


if __name__ == "__main__":
    main()
