"""Loading the sweep's Prefect flows and the settings they run under.

    prefect_defaults(ws)          # offline-safe Prefect settings; the user's own win
    flow = load_flow(ws)          # flows/sweep.py:sweep from the workspace
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mergeval.core.workspace import Workspace


class FlowMissing(FileNotFoundError):
    """No flows/<name>.py in the workspace, nor beside the package's source."""


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
    candidates = [ws.root / "flows" / f"{name}.py", Path(__file__).resolve().parents[3] / "flows" / f"{name}.py"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise FlowMissing(f"no flows/{name}.py in {ws.root}")
    spec = importlib.util.spec_from_file_location(f"mergeval_flows_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)
