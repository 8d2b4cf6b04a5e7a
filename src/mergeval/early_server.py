"""Start Prefect's temporary server while a sweep's inputs are checked, not after.

Without PREFECT_API_URL, Prefect starts a temporary API server the first time a flow asks for
a client: a subprocess that imports the server and migrates its database (3–6 s). The input
checks before it take about as long (mostly importing mergekit for the recipe checks). The
server is another process, so the two can run side by side on two cores instead of one after
the other: this is most of what a re-run that finds everything done costs.

    with prefect_server_starting():
        check_sweep_inputs(...)   # bad input: the server is stopped before the exit
    flow(...)                     # Prefect finds its temporary server already up
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator


class _QuietStartStop(logging.Filter):
    """Hide the server's start/stop lines while it may yet be stopped for bad input:
    they would sit between the user's `file:line` problems and mean nothing to them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "temporary server" not in record.getMessage()


@contextmanager
def prefect_server_starting() -> Iterator[None]:
    """Start the temporary server in the background for the length of the block; on leaving
    it, wait until it is up. If the block raises (bad input), stop the server at once."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield  # a real server is configured (or none allowed): nothing to start
        return
    logger, quiet = logging.getLogger("prefect"), _QuietStartStop()
    logger.addFilter(quiet)
    starter = _Starter()
    starter.start()
    try:
        yield
    except BaseException:  # bad input: exit now, not after the server is up
        starter.abandon()  # the filter stays: Prefect's own stop at exit is silent too
        raise
    starter.join()
    logger.removeFilter(quiet)


class _Starter(threading.Thread):
    """Imports Prefect's server module (≈2 s) and starts the singleton its client will use."""

    def __init__(self):
        super().__init__(daemon=True, name="prefect-temporary-server")
        self.lock = threading.Lock()
        self.cancelled = False
        self.server = None

    def run(self) -> None:
        from prefect.server.api.server import SubprocessASGIServer

        with self.lock:
            if self.cancelled:
                return
            self.server = SubprocessASGIServer()
        try:
            self.server.start()
        except Exception:  # noqa: BLE001 - Prefect's client starts it again and reports why
            pass

    def abandon(self) -> None:
        """No server if none was started yet; else kill it as soon as its process exists
        (SIGTERM waits out uvicorn's start-up). The thread's health polling dies with the
        interpreter: it is a daemon."""
        with self.lock:
            self.cancelled = True
        while self.server is not None and self.server.server_process is None and self.is_alive():
            time.sleep(0.02)
        process = self.server.server_process if self.server is not None else None
        if process is not None:
            process.kill()
            process.wait()
