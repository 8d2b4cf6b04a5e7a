"""What the sweep-starting commands share: their options and the check before any work.

`mergeval sweep` and `mergeval schedule` take the same sweep options and validate the same way,
so a bad recipe fails in seconds with exit status 2 before Prefect starts or a schedule exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mergeval.core.errors import InputError
from mergeval.core.workspace import Workspace

EXIT_BAD_INPUT = 2


def workspace_of(ctx: click.Context) -> Workspace:
    """The workspace the group found (or was given with --workspace)."""
    return ctx.obj["workspace"]


def fail_on_input(err: InputError) -> None:
    for problem in err.problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(err.problems)} problem(s); nothing was run.", err=True)
    sys.exit(EXIT_BAD_INPUT)


def sweep_options(command):
    """CONFIGS (or a sweep file), --items, --judge, --keep, the answering and merge options,
    --trust-remote-code. Every option defaults to None: given, it overrides the sweep file;
    not given, the file's value or SweepRequest's default is used."""
    for option in reversed([
        click.argument("configs", required=False, default=None, metavar="[CONFIGS|SWEEP.yaml]"),
        click.option("--items", default=None, help="Item suite folder.  [default: items/toy]"),
        click.option("--judge", default=None, help="Proctora settings.  [default: judge/toy/proctora.yaml for "
                     "items/toy, else judge/proctora.yaml]"),
        click.option("--keep", default=None, help="Merged weights kept on disk: all, none or top-K.  [default: top-3]"),
        click.option("--batch-size", type=int, default=None, help="Items answered per generate() call (openai: "
                     "requests in flight).  [default: 32]"),
        click.option("--max-new-tokens", type=int, default=None, help="Longest answer, in tokens, for items whose "
                     "suite.yaml and front matter do not say.  [default: 512]"),
        click.option("--backend", default=None, help="How models answer: transformers, vllm or openai (a served "
                     "model).  [default: transformers]"),
        click.option("--endpoint", default=None, help="openai: the server's base URL, e.g. http://127.0.0.1:8000/v1."),
        click.option("--served-model", default=None, help="openai: the model name sent per model under test; "
                     "{path} = its folder (what `transformers serve` loads), {name} = the model as ranked; "
                     "a fixed name is refused: a sweep has several models.  [default: {path}]"),
        click.option("--device", default=None, help="Where models answer: auto, cpu, cuda.  [default: auto]"),
        click.option("--dtype", default=None, help="How models answer in-process: auto, float32, bfloat16, "
                     "float16.  [default: auto = float32 on a CPU, the checkpoint's own on a GPU]"),
        click.option("--merge-device", default=None, help="Where mergekit merges: cpu, cuda.  [default: cpu]"),
        click.option("--trust-remote-code", "trust_remote_code", multiple=True, metavar="MODEL",
                     help="Let MODEL (as the ranking names it, or a source's path) run the Python in its "
                     "folder; repeat per model. A merge needs its sources named too. Default: no model."),
    ]):
        command = option(command)
    return command


def sweep_request(ctx: click.Context, trust_remote_code=(), **options):
    """The sweep request made of sweep_options' values (and the command's own, e.g. pool); when
    CONFIGS is a sweep file, its settings with every option given on the command line over them."""
    from mergeval.engine.request import SweepRequest
    from mergeval.engine.sweep_file import is_sweep_file, read_sweep_file

    ws = workspace_of(ctx)
    params: dict = {}
    if options.get("configs") and is_sweep_file(ws.resolve(options["configs"])):
        try:
            params = read_sweep_file(ws.resolve(options.pop("configs")))
        except InputError as e:
            fail_on_input(e)
    params.update({k: v for k, v in options.items() if v is not None})
    if trust_remote_code:
        params["trust_remote_code"] = trust_remote_code
    return SweepRequest.from_parameters(workspace=ws.root, **params)


def check_sweep_inputs(request):
    """Validate everything a sweep reads, before Prefect starts: bad input costs seconds.
    Returns the sweep's plan."""
    from mergeval.engine.request import parse_keep

    try:
        parse_keep(request.keep)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--keep")
    try:
        request.check()
    except ValueError as e:
        raise click.UsageError(str(e))
    try:
        return request.plan()
    except InputError as e:
        fail_on_input(e)


def check_judge(plan) -> None:
    """A judge that is down stops the sweep here, in one line and before Prefect starts,
    if anything is left to grade (exit status 1: the input is fine, the service is not)."""
    from mergeval.engine import stage_process, stages
    from mergeval.proctora.backend_base import JudgeUnavailable

    try:
        stage_process.call(stages.check_judge, plan)  # the judge's tokenizer loads where it will grade
    except JudgeUnavailable as e:
        click.echo(f"the judge is not available: {e}\nnothing was run.", err=True)
        sys.exit(1)


def summarize(run_dir: Path) -> None:
    from mergeval.engine import stage_process

    click.echo(stage_process.call(ranking_text, run_dir))  # pandas: where the stages run, if apart
    click.echo(f"\nreport: {run_dir / 'report.md'}")
    click.echo(f"        {run_dir / 'report.html'} (open in a browser)")


def report_outcome(outcome, what: str) -> Path:
    """A flow's result as the user sees it: the summary and the run folder, or, for a failed
    sweep or search, what there is of the summary, the failure and exit status 1."""
    from mergeval.core.errors import SweepFailed

    if isinstance(outcome, SweepFailed):
        summarize(Path(outcome.run_dir))
        click.echo(f"\n{outcome}", err=True)
        sys.exit(1)
    if isinstance(outcome, BaseException):
        click.echo(f"{what} failed: {outcome}", err=True)
        sys.exit(1)
    summarize(Path(outcome))
    return Path(outcome)


def ranking_text(run_dir: Path) -> str:
    """The ranking table and the verdict sentence, as the console shows them."""
    import pandas as pd

    ranking = pd.read_csv(run_dir / "ranking.csv")
    cols = [c for c in ("rank", "model", "score", "vs_best_parent", "n_unscored", "method") if c in ranking]
    table = ranking[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}")
    return f"\n{table}\n\n{verdict_sentence(pd.read_csv(run_dir / 'comparisons.csv'))}"


def verdict_sentence(comparisons) -> str:
    """Which merges beat their best parent, by how much, with the paired interval: the answer a
    sweep is run for, in one sentence."""
    best = comparisons[comparisons["best_parent"].astype(bool)]
    if best.empty:
        return "No merge was compared with its parents (none was fully graded beside them)."
    wins = best[best["ci_low"] > 0].sort_values("diff", ascending=False)
    if wins.empty:
        top = best.sort_values("diff", ascending=False).iloc[0]
        return (f"No merge beat its best parent with a paired 95 % interval above 0; the closest, {top['merge']}, "
                f"is {top['diff']:+.3f} against {top['parent']} ({top['ci_low']:+.3f} to {top['ci_high']:+.3f}).")
    parts = [f"{r['merge']} beat its best parent {r['parent']} by {r['diff']:+.3f} "
             f"(paired 95 % interval {r['ci_low']:+.3f} to {r['ci_high']:+.3f})" for _, r in wins.iterrows()]
    return "; ".join(parts) + "."
