"""A temporary Prefect server asked for first thing, so it is up by the time the sweep needs it.

Without PREFECT_API_URL, Prefect starts a temporary API server the first time a flow asks for
a client: it imports the whole server app in the sweep's own process (≈2 s) and then waits for
a uvicorn subprocess to import it again and migrate its database (≈2.5 s), all after the input
checks, and stops it when the command exits. Here the server is this environment's shared one
(temporary_server.py: same app and settings as Prefect's own, kept for the next command): found
up, or started before the checks, on the other core; the sweep's process never imports the
server app. That is most of what a re-run that finds everything done costs.

    with prefect_server_starting() as server:
        check_sweep_inputs(...)   # bad input (any exception): a server started for it is stopped
        server.temporary          # True: no server was configured, the temporary one serves
    flow(...)                     # PREFECT_API_URL now points at the server, which is up

If the server does not come up, nothing is set and Prefect starts its own as before.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mergeval.orchestration import temporary_server


@dataclass(frozen=True)
class Starting:
    temporary: bool  # the temporary server serves this command (none was configured)


@contextmanager
def prefect_server_starting() -> Iterator[Starting]:
    """Find or start the temporary server for the length of the block; on leaving it, wait
    until it answers and point Prefect at it. If the block raises (bad input), let go of the
    server, and stop it if this command started it."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield Starting(temporary=False)  # a real server is configured (or none allowed): nothing to start
        return
    settings = get_current_settings()
    try:
        server = temporary_server.lease(
            {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
             **settings.to_environment_variables(exclude_unset=True),
             # absolute: the server runs from / (a relative home would put its database there)
             "PREFECT_HOME": str(Path(settings.home).expanduser().resolve())})
    except (OSError, temporary_server.ServerDidNotStart):  # Prefect starts (and explains) its own
        yield Starting(temporary=True)
        return
    try:
        yield Starting(temporary=True)
    except BaseException:  # bad input, or nothing left to run: exit now, not after the server is up
        server.release(stop=server.started)
        raise
    if server.wait_healthy(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = server.url
        os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to nowhere
        # ... and no one reads the logs it would store (the console shows them): not sent
        os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
        refresh_global_settings_context()
        _without_heartbeats()
    else:  # broken: let Prefect start (and explain) its own temporary server
        server.release(stop=True)


def _without_heartbeats() -> None:
    """Flow runs on the temporary server send no heartbeats. They feed only the automation that
    marks a silent run Crashed, which only a real server has (deployments.ensure_zombie_automation),
    and each flow run, a search's every trial too, waited up to a second at its end for the
    heartbeat thread's sleep (Prefect joins it). Not expressible in the environment (None is
    not an int there), so the process's settings are replaced as refresh_global_settings_context
    replaces them. A frequency set in the environment is the user's, and kept."""
    import prefect.context

    if {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY"} & set(os.environ):
        return

    current = prefect.context.GLOBAL_SETTINGS_CONTEXT
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(
        profile=current.profile, settings=current.settings.copy_with_update(updates={"flows.heartbeat_frequency": None}))


def server_may_be_configured(cwd: Path | None = None) -> bool:
    """Whether Prefect may be pointed at a server, told without importing Prefect (≈3 s).

    Conservative: True when PREFECT_API_URL is in the environment, when any Prefect profile
    names one, or when a file Prefect reads its settings from (prefect.toml, .env, a
    pyproject.toml with [tool.prefect]) is in the working folder; only then is Prefect asked.
    """
    cwd = cwd or Path.cwd()
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_PROFILES_PATH"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = home / "profiles.toml"
    if profiles.is_file() and "PREFECT_API_URL" in profiles.read_text(encoding="utf-8", errors="replace"):
        return True
    if (cwd / "prefect.toml").is_file() or (cwd / ".env").is_file():
        return True
    pyproject = cwd / "pyproject.toml"
    return pyproject.is_file() and "[tool.prefect" in pyproject.read_text(encoding="utf-8", errors="replace")
