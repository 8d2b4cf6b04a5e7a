"""The judge's commands: regrade a run, calibrate Proctora against labels, the rubric-check app.

    mergeval regrade latest --judge judge/strict.yaml
    mergeval calibrate --from-run latest          # toy world: exact-match labels, then agreement
    mergeval calibrate                            # your labels in judge/calibration/labels.jsonl
    mergeval rubric                               # http://127.0.0.1:7860

Heavy imports (torch, gradio) happen inside the commands, so `mergeval --help` stays quick.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import click

from mergeval.cli.common import EXIT_BAD_INPUT, fail_on_input, summarize
from mergeval.core.errors import InputError
from mergeval.runs.lookup import RunNotFound, find_run


def _bad_input(err: InputError) -> None:
    fail_on_input(err)


def _judge_unavailable(err: Exception) -> None:
    click.echo(f"the judge cannot grade: {err}", err=True)
    sys.exit(1)


@click.command()
@click.argument("run")
@click.option("--judge", help="Judge settings to grade with (default: the file the run used).")
@click.pass_context
def regrade(ctx: click.Context, run: str, judge: str | None) -> None:
    """Grade RUN's stored answers again (other judge settings) into a new run folder.

    RUN is a run folder, a run name under reports/, or `latest`. Nothing is merged or
    answered; the items must be the ones the run answered.
    """
    from mergeval.engine.regrade import RegradeRefused
    from mergeval.engine.regrade import regrade as regrade_run
    from mergeval.proctora.judge import JudgeUnavailable

    ws = ctx.obj["workspace"]
    try:
        run_dir = find_run(ws, run)
        new = regrade_run(ws, run_dir, ws.resolve(judge) if judge else None, log=click.echo)
    except (RegradeRefused, RunNotFound) as e:
        click.echo(f"regrade refused: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except InputError as e:
        _bad_input(e)
    except JudgeUnavailable as e:
        _judge_unavailable(e)
    summarize(new)


@click.command()
@click.option("--judge", default=None, help="Proctora settings.  [default: with --from-run, the run's judge "
              "(judge/toy/proctora.yaml for a toy run); else judge/proctora.yaml]")
@click.option("--labels", help="Labels file or folder (default: judge/calibration/labels.jsonl; "
                               "with --from-run: judge/calibration/from-runs/<run>.jsonl).")
@click.option("--from-run", "from_run", help="First make exact-match labels from this run's checks "
                                             "(a run folder, a name under reports/, or latest).")
@click.pass_context
def calibrate(ctx: click.Context, judge: str | None, labels: str | None, from_run: str | None) -> None:
    """Grade labelled answers with Proctora and report its agreement with the labels.

    \b
    Exact and within-one agreement, quadratic weighted Cohen's kappa, Spearman (midranks
    for ties) and the confusion matrix; unscored answers are counted apart, never as 0.
    The result is saved under reports/calibration/.
    """
    from mergeval.audit import calibrate as cal
    from mergeval.core.store import write_atomic
    from mergeval.proctora.judge import JudgeUnavailable
    from mergeval.proctora.settings import load_settings

    ws = ctx.obj["workspace"]
    try:
        run_dir = find_run(ws, from_run) if from_run else None
        if judge is None:  # a run's labels are graded by the judge that graded the run
            recorded = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if run_dir else {}
            judge = recorded.get("settings", {}).get("judge") or "judge/proctora.yaml"
        settings = load_settings(ws.resolve(judge), ws)
        if run_dir:
            made, skipped = cal.labels_from_run(run_dir, tuple(settings.scale))
            path = ws.resolve(labels) if labels else ws.root / cal.FROM_RUNS / f"{run_dir.name}.jsonl"
            write_atomic(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in made))
            click.echo(f"{len(made)} exact-match labels from run {run_dir.name} → {path}"
                       + (f" ({skipped} answers without checks have no label)" if skipped else ""))
        else:
            path = ws.resolve(labels) if labels else ws.root / cal.DEFAULT_LABELS
        stats, out = cal.calibrate(ws, settings, path, ws.resolve(judge), log=click.echo)
    except RunNotFound as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_BAD_INPUT)
    except InputError as e:
        _bad_input(e)
    except JudgeUnavailable as e:
        _judge_unavailable(e)
    click.echo(f"\nProctora ({settings.model}) against {path}:")
    click.echo(cal.format_agreement(stats))
    click.echo(f"\nsaved: {out}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --password.")
@click.option("--port", default=7860, show_default=True, type=int)
@click.option("--password", envvar="MERGEVAL_RUBRIC_PASSWORD",
              help="Required beyond loopback (any user name). Better: set MERGEVAL_RUBRIC_PASSWORD.")
@click.option("--judge", default="judge/proctora.yaml", show_default=True, help="Proctora settings.")
@click.option("--labels", default=str(Path("judge/calibration/labels.jsonl")), show_default=True,
              help="Where your scores are appended as calibration labels.")
@click.pass_context
def rubric(ctx: click.Context, host: str, port: int, password: str | None, judge: str, labels: str) -> None:
    """Serve the rubric-check app: grade answers with Proctora, record your own scores."""
    if not is_loopback(host) and not password:
        click.echo(f"refusing to listen on {host} without a password: anyone who can reach it could "
                   "run the judge and write labels. Set MERGEVAL_RUBRIC_PASSWORD (or --password), "
                   "or keep the default --host 127.0.0.1.", err=True)
        sys.exit(EXIT_BAD_INPUT)
    from mergeval.audit.rubric import serve
    from mergeval.proctora.settings import load_settings

    ws = ctx.obj["workspace"]
    try:
        settings = load_settings(ws.resolve(judge), ws)
    except InputError as e:
        _bad_input(e)
    serve(ws, settings, ws.resolve(labels), host=host, port=port, password=password)
