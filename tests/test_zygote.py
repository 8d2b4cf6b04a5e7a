"""tests/zygote.py: a `python -m` forked from the pre-imported server behaves as a fresh one would
for what the tests look at: its own pid and session, argv, environment, working folder, exit
status, output, and death by signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests import zygote

PROBE = """import os, sys, torch
print(os.getpid(), os.getcwd(), os.environ.get("PROBE"), sys.argv[1:], torch.get_num_threads())
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


def test_a_forked_command_gets_its_own_argv_env_folder_output_and_status(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE="yes", PROBE_EXIT="3")  # the server's one thread
    assert zygote.forkable([sys.executable, "-m", "probe"], env)
    done = zygote.run([sys.executable, "-m", "probe", "a", "b c"], env=env, cwd=tmp_path, capture_output=True,
                      text=True, timeout=120)
    pid, folder, probe, argv = done.stdout.split(" ", 3)
    assert done.returncode == 3 and int(pid) != os.getpid()
    assert (folder, probe) == (str(tmp_path), "yes") and argv.strip() == "['a', 'b c'] 1"
    assert done.stderr == "to stderr\n"


def test_a_forked_command_has_its_own_session_and_dies_by_sigkill(tmp_path):
    (tmp_path / "wait.py").write_text("import sys; print('up', flush=True); sys.stdin.read()")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    assert zygote.forkable([sys.executable, "-m", "wait"], env)
    proc = zygote.Popen([sys.executable, "-m", "wait"], env=env, cwd=tmp_path, start_new_session=True,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"
    assert os.getpgid(proc.pid) == proc.pid and proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdin.close()
    proc.stdout.close()


def test_what_the_imports_read_differs_or_it_is_not_python_m_so_it_starts_fresh():
    assert not zygote.forkable([sys.executable, "-m", "probe"], dict(os.environ, HF_HOME="/elsewhere"))
    assert not zygote.forkable([sys.executable, "-m", "probe"], dict(os.environ, XDG_CACHE_HOME="/elsewhere"))
    assert not zygote.forkable([sys.executable, "-c", "pass"], None)
    assert not zygote.forkable(["mergeval", "sweep"], None)
    done = zygote.run([sys.executable, "-c", "import sys; sys.exit(5)"], timeout=60)  # subprocess's own way
    assert done.returncode == 5
