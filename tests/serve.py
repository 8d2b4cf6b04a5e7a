"""`transformers serve` on 127.0.0.1: a real OpenAI-compatible server for the tests, and the
shipped judge file edited, as its comments say, to use a served judge."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(extra_args: list[str], log: Path, timeout: float = 90):
    """Start `transformers serve ARGS` on a free port; yields its /v1 base URL; stops it."""
    cli = Path(sys.executable).with_name("transformers")
    if not cli.exists():
        pytest.skip(f"no transformers CLI next to {sys.executable}")
    pytest.importorskip("fastapi")  # transformers serve needs fastapi and uvicorn (prefect brings them)
    pytest.importorskip("uvicorn")
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = open(log, "wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen([str(cli), "serve", *extra_args, "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"transformers serve did not come up: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


def shipped_judge_for_server(folder: Path, endpoint: str, model: str, **edits: str) -> Path:
    """judge/proctora.yaml and prompt.txt, with exactly the edits its comments name for a
    served judge (backend, endpoint, model), and any `key: value` line changed in `edits`."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "judge" / "prompt.txt", folder / "prompt.txt")
    text = (REPO / "judge" / "proctora.yaml").read_text(encoding="utf-8")
    text = re.sub(r"^backend: transformers$", "backend: openai", text, count=1, flags=re.M)
    text = re.sub(r"^# endpoint: .*$", f"endpoint: {endpoint}", text, count=1, flags=re.M)
    text = re.sub(r"^model: .*$", f"model: {model}", text, count=1, flags=re.M)
    for key, value in edits.items():
        text, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", text, count=1, flags=re.M)
        assert n == 1, key
    (folder / "proctora.yaml").write_text(text, encoding="utf-8")
    return folder / "proctora.yaml"
