"""engine/merge_server.py: merges forked from one pre-imported process, each still a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mergeval.core import store
from mergeval.engine import merge_server
from mergeval.engine.build import build
from mergeval.inputs.recipes import load_recipe
from tests.test_build import TIES, wait_for, write_recipe


def weights(built) -> bytes:
    return (built.path / "model.safetensors").read_bytes()


def test_a_forked_merge_is_bit_identical_to_one_in_a_fresh_interpreter(tiny_ws, monkeypatch):
    text = TIES.replace("merge_method: ties", "merge_method: dare_ties")  # random: the seed must hold too
    recipe = load_recipe(write_recipe(tiny_ws, "dare", text), tiny_ws)
    forked = build(recipe, tiny_ws)
    forked_weights = weights(forked)
    store.remove_tree(forked.path)

    monkeypatch.setenv("MERGEVAL_MERGE_FORK", "0")
    fresh = build(recipe, tiny_ws)
    assert not fresh.cached and weights(fresh) == forked_weights


def test_one_server_serves_merge_after_merge_and_a_new_environment_gets_a_new_one(tiny_ws, monkeypatch):
    first = build(load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws), tiny_ws)
    server = merge_server._idle[-1]
    second = build(load_recipe(write_recipe(tiny_ws, "ties_d05", TIES.replace("0.8", "0.5")), tiny_ws), tiny_ws)
    assert merge_server._idle == [server] and server.proc.poll() is None  # the same process, reused
    assert weights(first) != weights(second)

    monkeypatch.setenv("HF_TOKEN_PATH", str(tiny_ws.root / "token"))  # modules read such variables when imported
    build(load_recipe(write_recipe(tiny_ws, "ties_d06", TIES.replace("0.8", "0.6")), tiny_ws), tiny_ws)
    assert merge_server._idle != [server] and server.proc.poll() is not None  # the stale one was stopped


def test_a_merge_that_fails_reports_its_traceback_and_the_server_goes_on(tmp_path):
    returncode, log = merge_server.run_merge([str(tmp_path / "missing.yaml"), str(tmp_path / "out")])
    assert returncode == 1 and "FileNotFoundError" in log
    assert merge_server._idle and merge_server._idle[-1].proc.poll() is None


def test_a_killed_client_takes_its_server_and_the_merge_in_progress_with_it(tiny_ws):
    config = tiny_ws.root / "ties.yaml"
    config.write_text(TIES)
    code = ("import sys; from mergeval.engine import merge_server; "
            "merge_server.run_merge([sys.argv[1], sys.argv[2]])")
    client = subprocess.Popen([sys.executable, "-c", code, str(config), str(tiny_ws.root / "out")])
    wait_for(lambda: children(client.pid))
    server = children(client.pid)[0]
    wait_for(lambda: children(server))  # the merge has been forked: it is importing nothing, merging
    merge = children(server)[0]
    client.kill()  # SIGKILL: no atexit, no cleanup of its own
    client.wait()
    wait_for(lambda: not alive(server) and not alive(merge), timeout=10)


def test_closing_a_server_mid_merge_stops_the_merge_too(tiny_ws):
    """What run_merge does when its caller is interrupted (Ctrl-C): no merge left running, orphaned."""
    build(load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws), tiny_ws)
    server = merge_server._idle[-1]
    config = tiny_ws.root / "c.yaml"
    config.write_text(TIES)
    thread = threading.Thread(target=lambda: merge_server.run_merge([str(config), str(tiny_ws.root / "o")]))
    thread.start()
    wait_for(lambda: children(server.proc.pid))
    merge = children(server.proc.pid)[0]
    server.close()
    assert not alive(merge)  # reaped by its server before close() returned, not left to finish
    thread.join(timeout=60)
    assert server.proc.poll() is not None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_server_killed_mid_merge_is_a_failed_merge_not_a_hang(tiny_ws):
    build(load_recipe(write_recipe(tiny_ws, "ties", TIES), tiny_ws), tiny_ws)
    server = merge_server._idle[-1]
    config = tiny_ws.root / "c.yaml"
    config.write_text(TIES)
    result = []
    thread = threading.Thread(target=lambda: result.append(merge_server.run_merge([str(config), str(tiny_ws.root / "o")])))
    thread.start()
    wait_for(lambda: not merge_server._idle)
    server.proc.kill()
    thread.join(timeout=60)
    assert result and result[0][0] != 0 and "merge server process died" in result[0][1]


@pytest.fixture(autouse=True)
def no_servers_left_over():
    yield
    merge_server._close_all()
    merge_server._idle.clear()
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_merge_server(p)]


def _is_merge_server(pid: str) -> bool:
    """A merge server this test process started (other tests' sweeps run servers of their own)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        parent = int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])
    except OSError:
        return False
    return b"mergeval.engine.merge_server" in cmd and parent == os.getpid() and alive(int(pid))



def test_a_call_runs_in_a_child_of_the_server_and_brings_back_its_result_or_its_exception():
    import json

    pid = merge_server.call(os.getpid)
    assert pid != os.getpid()  # forked from the server, not run here
    assert merge_server.call(json.loads, '{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):  # raised in the child, re-raised here as itself
        merge_server.call(json.loads, "{not json")
    assert merge_server.call(os.getpid) != pid  # one child per call: nothing carries over
