"""A temporary Prefect server started first thing, so it is up by the time the sweep needs it.

Without PREFECT_API_URL, Prefect starts a temporary API server the first time a flow asks for
a client: it imports the whole server app in the sweep's own process (≈2 s) and then waits for
a uvicorn subprocess to import it again and migrate its database (≈2.5 s), all after the input
checks. Here the same subprocess, with the same command line and settings as Prefect's own
temporary server (prefect.server.api.server.SubprocessASGIServer), is started before the
checks, on the other core, and the sweep's process never imports the server app. That is most
of what a re-run that finds everything done costs.

    with prefect_server_starting() as server:
        check_sweep_inputs(...)   # bad input (any exception): the server is killed at once
        server.temporary          # True: this block started it (no server was configured)
    flow(...)                     # PREFECT_API_URL now points at the server, which is up

If the server does not come up, nothing is set and Prefect starts its own as before.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class Starting:
    temporary: bool  # a temporary server is starting for this command (none was configured)


@contextmanager
def prefect_server_starting() -> Iterator[Starting]:
    """Start the server for the length of the block; on leaving it, wait until it answers and
    point Prefect at it. If the block raises (bad input), kill the server instead."""
    import prefect
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield Starting(temporary=False)  # a real server is configured (or none allowed): nothing to start
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
             "PREFECT__SERVER_FINAL": "1",
             **get_current_settings().to_environment_variables(exclude_unset=True)},
    )
    try:
        yield Starting(temporary=True)
    except BaseException:  # bad input, or nothing left to run: exit now, not after the server is up
        server.kill()
        server.wait()
        raise
    atexit.register(_stop, server)  # after Prefect's own exit hooks have sent the last logs
    url = f"http://127.0.0.1:{port}/api"
    if _wait_healthy(server, url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = url
        os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to nowhere
        refresh_global_settings_context()
    else:  # let Prefect start (and explain) its own temporary server
        _stop(server)


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client() as client:
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    return False


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
