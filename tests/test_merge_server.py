"""engine/merge_server.py: merges forked from one pre-imported process, each still a process of its own."""

from __future__ import annotations

import json
import os
import signal
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
    server = merge_server.server_pid()
    second = build(load_recipe(write_recipe(tiny_ws, "ties_d05", TIES.replace("0.8", "0.5")), tiny_ws), tiny_ws)
    assert server and merge_server.server_pid() == server  # the same process, reused
    assert weights(first) != weights(second)

    monkeypatch.setenv("HF_TOKEN_PATH", str(tiny_ws.root / "token"))  # modules read such variables when imported
    build(load_recipe(write_recipe(tiny_ws, "ties_d06", TIES.replace("0.8", "0.6")), tiny_ws), tiny_ws)
    assert merge_server.server_pid() not in (None, server)
    merge_server.shutdown()
    monkeypatch.delenv("HF_TOKEN_PATH")
    assert merge_server.server_pid() == server  # the first environment's server is still up


def test_the_server_outlives_its_client_for_the_next_command_and_then_idles_out(tiny_ws, monkeypatch):
    merge_server.shutdown()  # one that an earlier test started waits longer
    monkeypatch.setenv("MERGEVAL_MERGE_SERVER_IDLE_S", "3")
    code = "from mergeval.engine import merge_server; merge_server.warm(); print(merge_server.server_pid())"
    started = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert merge_server.server_pid() == started  # still up once the command that started it is gone
    wait_for(lambda: not alive(started), timeout=30)  # idle for 3 s: gone, socket and all
    assert not os.path.exists(merge_server.socket_path())
    assert merge_server.call(json.loads, "[1]") == [1]  # and the next request starts a new one
    assert merge_server.server_pid() not in (None, started)


def test_a_merge_that_fails_reports_its_traceback_and_the_server_goes_on(tmp_path):
    returncode, log = merge_server.run_merge([str(tmp_path / "missing.yaml"), str(tmp_path / "out")])
    assert returncode == 1 and "FileNotFoundError" in log
    assert merge_server.server_pid()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_client_killed_or_interrupted_mid_merge_takes_the_merge_with_it(tiny_ws, how):
    config = tiny_ws.root / "ties.yaml"
    config.write_text(TIES)
    merge_server.warm()
    server = merge_server.server_pid()
    code = ("import sys; from mergeval.engine import merge_server; "
            "merge_server.run_merge([sys.argv[1], sys.argv[2]])")
    client = subprocess.Popen([sys.executable, "-c", code, str(config), str(tiny_ws.root / "out")],
                              stderr=subprocess.DEVNULL)
    wait_for(lambda: grandchildren(server))  # the merge has been forked: it is importing nothing, merging
    handler, merge = in_progress(server)
    client.send_signal(how)  # SIGKILL: no atexit, no cleanup of its own; SIGINT: Ctrl-C
    client.wait()
    wait_for(lambda: not alive(merge) and not alive(handler), timeout=10)
    assert alive(server)  # waiting for the next command


def test_a_merge_killed_or_its_handler_killed_is_a_failed_merge_not_a_hang(tiny_ws):
    config = tiny_ws.root / "c.yaml"
    config.write_text(TIES)
    merge_server.warm()
    server = merge_server.server_pid()
    for victim in ("merge", "handler"):
        result = []
        thread = threading.Thread(target=lambda: result.append(
            merge_server.run_merge([str(config), str(tiny_ws.root / "o")])))
        thread.start()
        wait_for(lambda: grandchildren(server))
        handler, merge = in_progress(server)
        os.kill(merge if victim == "merge" else handler, signal.SIGKILL)
        thread.join(timeout=60)
        assert result and result[0][0] != 0, victim
        wait_for(lambda: not alive(merge), timeout=10)  # a handler's death takes its merge with it
    assert "merge server process died" in result[0][1]  # the handler's death: no exit status came


def test_a_killed_server_is_replaced_and_its_merge_in_progress_still_finishes(tiny_ws):
    config = tiny_ws.root / "c.yaml"
    config.write_text(TIES.replace("zoo/", f"{tiny_ws.root}/zoo/"))  # paths, not names to look up on a hub
    merge_server.warm()
    server = merge_server.server_pid()
    result = []
    thread = threading.Thread(target=lambda: result.append(merge_server.run_merge([str(config), str(tiny_ws.root / "o")])))
    thread.start()
    wait_for(lambda: grandchildren(server))
    os.kill(server, signal.SIGKILL)  # its socket stays behind, listened to by nobody
    thread.join(timeout=120)
    assert result and result[0][0] == 0 and (tiny_ws.root / "o" / "config.json").exists(), result[0][1][-3000:]
    assert merge_server.call(json.loads, "2") == 2  # the stale socket is replaced by a new server
    assert merge_server.server_pid() not in (None, server)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def grandchildren(pid: int) -> list[int]:
    return [g for c in children(pid) for g in children(c)]


def in_progress(server: int) -> tuple[int, int]:
    """(handler, merge) of the request the server is running (finished handlers it has not
    reaped yet are children too)."""
    return next((c, g) for c in children(server) for g in children(c))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(autouse=True, scope="module")
def no_servers_left_over():
    yield
    merge_server.shutdown()  # the next module's tests start from none


def test_a_call_runs_in_a_child_of_the_server_and_brings_back_its_result_or_its_exception():
    pid = merge_server.call(os.getpid)
    assert pid != os.getpid()  # forked from the server, not run here
    assert merge_server.call(json.loads, '{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(json.JSONDecodeError):  # raised in the child, re-raised here as itself
        merge_server.call(json.loads, "{not json")
    assert merge_server.call(os.getpid) != pid  # one child per call: nothing carries over
