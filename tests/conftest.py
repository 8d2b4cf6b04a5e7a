"""Shared fixtures: isolated homes, one torch thread, tiny workspaces built in temp dirs."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Two cores: one thread per process is faster than two under contention (facts.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MERGEVAL_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a model hub
# ... and never read the user's hub cache: a session's own, empty until a test fills it
# (tests/real_world.py). Set before huggingface_hub is imported: it reads these once.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mergeval-hf-")
os.environ["HF_HUB_CACHE"] = os.path.join(os.environ["HF_HOME"], "hub")

from mergeval.core.workspace import Workspace  # noqa: E402
from tests.tiny_models import make_tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


# Prefect's home (database, settings) per test session, never the user's; set before any
# test imports prefect, which reads these once.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="mergeval-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
# Merge servers (engine/merge_server.py) outlive the command that started them, so sweeps in a
# row share one. A session's live in a folder of its own (their sockets' folder is under
# XDG_RUNTIME_DIR), so that its end stops every one of them, whichever environment started
# it: they may idle as long as a session lasts instead of being started again (≈ 6 CPU-s of
# imports each) after every quiet minute.
os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="mgv-")
atexit.register(shutil.rmtree, os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)
os.environ.setdefault("MERGEVAL_MERGE_SERVER_IDLE_S", "900")
# Temporary Prefect servers of a test's own Prefect home are gone soon after it (the sweeps'
# shared one idles longer and is stopped at the end: sweep_helpers.sweep_env).
os.environ.setdefault("MERGEVAL_PREFECT_SERVER_IDLE_S", "60")


@pytest.fixture(autouse=True, scope="session")
def _stop_merge_server():
    yield
    from mergeval.engine import merge_server
    from tests.sweep_helpers import stop_shared_sweep_server

    for path in Path(merge_server.socket_path()).parent.glob("merge-*.sock"):
        merge_server.shutdown(str(path))
    stop_shared_sweep_server()


def tiny_zoo_workspace(root: Path) -> Workspace:
    """A workspace whose zoo/ holds three tiny random Llamas with one shared vocabulary."""
    for seed, name in enumerate(("base", "spec_add", "spec_rev")):
        make_tiny_model(root / "zoo" / name, "llama", seed=seed, num_layers=4)
    (root / "merge_configs").mkdir(parents=True, exist_ok=True)
    return Workspace(root)


@pytest.fixture
def tiny_ws(tmp_path) -> Workspace:
    return tiny_zoo_workspace(tmp_path / "ws")


@pytest.fixture
def toy_recipes(tiny_ws) -> Workspace:
    """The repository's toy recipes, pointed at the tiny zoo."""
    shutil.copytree(REPO / "merge_configs" / "toy", tiny_ws.configs / "toy")
    return tiny_ws


def pytest_itemcollected(item):
    """Tests that share a module-scoped fixture (a built world, a served model, a finished
    sweep) run on one xdist worker: `--dist loadgroup` otherwise spreads them over both, and
    each worker builds the fixture again (a conversation sweep's 70 s, twice). Marked as each
    is collected, before xdist reads the groups off the marks."""
    if item.get_closest_marker("xdist_group"):
        return
    info = getattr(item, "_fixtureinfo", None)
    if info and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
        item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_collection_finish(session):
    """Stop at once if xdist's grouping has no effect (pytest 9.2 with pytest-xdist 3.8 ran every
    grouped test wherever it fell, building shared worlds and servers once per worker)."""
    if getattr(session.config.option, "loadgroup", False):  # set on xdist's workers under --dist loadgroup
        ungrouped = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
        if ungrouped:
            pytest.exit(f"--dist loadgroup does not group {ungrouped[0]} with this pytest and pytest-xdist: "
                        "see the pytest pin in pyproject.toml", returncode=3)
