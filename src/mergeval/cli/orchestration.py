"""Watch, schedule and spread sweeps with Prefect's own machinery: a server, deployments, workers.

    mergeval server                                   # Prefect server + UI on 127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api  # then every sweep shows up in the UI
    mergeval schedule --cron "0 2 * * *"              # the toy sweep every night at 02:00
    mergeval schedule sweeps/mine.yaml --cron "0 2 * * *"   # the sweep a sweep file describes
    mergeval worker --pool gpus                       # on each GPU box, sharing the workspace
    mergeval schedule --cron "0 2 * * *" --pool gpus  # each model a child run on any worker

`schedule` serves the sweep (flow.serve): one long-running process holds the schedule and
runs the parent flow, with no pool to set up for one box; with --pool the heavy per-model
work goes to the workers. Both need a server (the embedded one has no scheduler).
"""

from __future__ import annotations

import os
import sys

import click

from mergeval.cli.common import check_sweep_inputs, sweep_options, sweep_request
from mergeval.orchestration.deployments import HEARTBEAT_S
from mergeval.orchestration.flows import load_flow, prefect_defaults

DEFAULT_PORT = 4200  # Prefect's own default, so its docs' URLs work as written


def _need_server() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()  # a Prefect profile may set it too
    if not url:
        raise click.ClickException(
            "no Prefect server configured: start one with `mergeval server`, then "
            f"`export PREFECT_API_URL=http://127.0.0.1:{DEFAULT_PORT}/api` and run this again")
    return url


def _worker_env() -> None:
    """Settings every worker's flow runs inherit; the user's own win."""
    defaults = {
        "PREFECT_LOGGING_EXTRA_LOGGERS": "mergekit,transformers",  # their logs in the UI
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # not a default: the automation that marks a dead box's runs Crashed expects this beat
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_S)


@click.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True, help="Port of the API and the UI.")
def server(port: int) -> None:
    """Start the Prefect server and its UI on 127.0.0.1 (stop it with Ctrl-C).

    \b
    Then, in the shell that runs sweeps:
      export PREFECT_API_URL=http://127.0.0.1:4200/api
      mergeval sweep        # each model and stage by name, logs, progress and ranking
    """
    url = f"http://127.0.0.1:{port}"
    click.echo(f"Prefect UI: {url}\nPoint sweeps, schedules and workers at it with:\n"
               f"  export PREFECT_API_URL={url}/api\n", err=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The UI asks /ui-settings where the API is; Prefect answers PREFECT_UI_API_URL, else
    # PREFECT_API_URL, else the *setting* PREFECT_SERVER_API_PORT (4200), never the --port this
    # server listens on. Say it, unless the user chose a URL for the UI (e.g. behind a proxy).
    if not (os.environ.get("PREFECT_UI_API_URL") or os.environ.get("PREFECT_SERVER_UI_API_URL")):
        os.environ["PREFECT_SERVER_UI_API_URL"] = f"{url}/api"
    os.environ["PREFECT_SERVER_API_PORT"] = str(port)
    # replace this process: Ctrl-C and kill reach the server itself, nothing is left behind
    os.execv(sys.executable, [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                              "--port", str(port)])


@click.command()
@click.option("--pool", required=True, help="Work pool to take models from (created if missing).")
@click.option("--limit", default=1, show_default=True, help="Models run at once: 1 per GPU.")
@click.option("--name", help="Worker name shown in the UI (default: Prefect's).")
def worker(pool: str, limit: int, name: str | None) -> None:
    """Run sweep models and search trials from POOL on this box: build → answer → grade, one at a time.

    \b
    The workspace and flows/ must be at the same path on every box (a shared filesystem):
    models, answers, grades and Prefect's task results live there, so any box resumes
    what another one started.
    """
    from mergeval.orchestration.deployments import ensure_pool, ensure_zombie_automation

    _need_server()
    _worker_env()
    ensure_pool(pool)
    ensure_zombie_automation()
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
           "--limit", str(limit), "--install-policy", "never"]
    os.execv(sys.executable, cmd + (["--name", name] if name else []))


@click.command()
@sweep_options
@click.option("--cron", required=True, help='When, as cron in the server\'s time zone: "0 2 * * *" = 02:00.')
@click.option("--pool", help="Send each model to this work pool's workers (default: run here).")
@click.option("--name", default="nightly", show_default=True, help="Deployment name (mergeval-sweep/NAME).")
@click.pass_context
def schedule(ctx: click.Context, cron: str, pool: str | None, name: str, **options) -> None:
    """Serve the sweep as a deployment on a cron schedule (stop with Ctrl-C: the schedule pauses).

    \b
    A failed run can be retried from the UI: the retry runs only what failed.
    """
    import cloudpickle

    from mergeval.orchestration.deployments import sibling

    request = sweep_request(ctx, pool=pool, **options)  # a bad sweep file: file:line, exit 2, first
    _need_server()
    check_sweep_inputs(request)
    prefect_defaults(request.ws)
    # serve() finds the flow's file through its module, so the module is registered by name;
    # and it hands each run to a fresh process pickled, where that name cannot be imported:
    # cloudpickle then sends the module's code by value.
    module = sibling(load_flow(request.ws).fn.__globals__["__file__"], "sweep")
    cloudpickle.register_pickle_by_value(module)
    module.sweep.serve(name=name, cron=cron, parameters=request.parameters())
