"""The rubric-check app: `mergeval rubric` as a real process, driven in a real headless
Chromium (tests/browser.py), with the shipped toy Proctora grading for real.

The browser logs in (the app is started with a password), picks an item by skill, types an
answer, grades it, saves a score, and the labels file must hold exactly that new line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import browser_page, save_screenshot
from tests.test_regrade import cli, copy_world, judge_world

PASSWORD = "correct horse"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def world(tmp_path_factory, tmp_path) -> Path:
    root, _ = judge_world(tmp_path_factory)
    return copy_world(root, tmp_path / "ws")


@pytest.fixture
def app(world, tmp_path):
    """`mergeval rubric` on 127.0.0.1:<free port>, with a password; stopped after the test."""
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False", MERGEVAL_RUBRIC_PASSWORD=PASSWORD,
               GRADIO_TEMP_DIR=str(tmp_path / "gradio"))  # Gradio's uploads/cache: not /tmp/gradio
    cmd = [sys.executable, "-m", "mergeval.cli.main", "--workspace", str(world), "rubric", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited ({proc.returncode}):\n{(tmp_path / 'app.log').read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the app did not listen within 90 s")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_grade_an_answer_and_save_a_label_in_a_real_browser(app, world, tmp_path):
    from mergeval.inputs.items import load_items

    labels = world / "judge" / "calibration" / "labels.jsonl"
    with browser_page(tmp_path) as page:
        page.goto(app)
        page.get_by_label("username").fill("me")  # any user name; the password is what counts
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#item-text :text('what is 13 plus 9')")

        page.click("#skill input")  # filter by skill, then pick an item
        page.get_by_role("option", name="rev", exact=True).click()
        page.wait_for_function("document.querySelector('#item input').value.startsWith('rev/')")
        page.click("#item input")
        page.get_by_role("option", name="rev/rev_003").click()
        page.wait_for_selector("#item-text :text('reverse b a e c d h')")

        page.fill("#answer textarea", "h d c e a b")
        page.click("#grade")
        page.wait_for_selector("#grade-result :text('Proctora:')")
        assert "[RESULT]" in page.input_value("#judge-reply textarea")  # the raw reply is shown

        page.get_by_label("4", exact=True).check()
        page.locator("#who").get_by_role("textbox").fill("tester")
        page.click("#save-label")
        page.wait_for_selector("#save-status :text('Saved')")
        page.wait_for_selector("#agreement :text('labels 1: scored 1')")
        save_screenshot(page, tmp_path, "rubric_app.png")

    lines = labels.read_text().splitlines()
    assert len(lines) == 1
    label = json.loads(lines[0])
    item = {it.id: it for it in load_items(world / "items" / "toy")}["rev/rev_003"]
    assert {k: label[k] for k in ("item_id", "suite", "answer", "human_score", "who", "item_hash")} == {
        "item_id": "rev/rev_003", "suite": "toy", "answer": "h d c e a b", "human_score": 4, "who": "tester",
        "item_hash": item.hash}
    assert (tmp_path / "rubric_app.png").stat().st_size > 10_000
    assert cli(world, "calibrate").exit_code == 0  # the app's label is a valid calibration label


def test_refuses_to_listen_beyond_loopback_without_a_password(world, monkeypatch):
    from mergeval.cli.judge import is_loopback

    monkeypatch.delenv("MERGEVAL_RUBRIC_PASSWORD", raising=False)
    result = cli(world, "rubric", "--host", "0.0.0.0")
    assert result.exit_code == 2 and "without a password" in result.output
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2", "0.0.0.0", "192.168.1.4",
                                     "example.org")] == [True, True, True, True, False, False, False]


def test_desk_answers_with_a_local_model(world):
    from mergeval.audit.rubric import Desk
    from mergeval.core.workspace import Workspace
    from mergeval.proctora.settings import load_settings

    ws = Workspace(world)
    desk = Desk(ws, load_settings(ws.judge_file, ws), world / "judge" / "calibration" / "labels.jsonl")
    try:
        assert desk.suites() == ["toy"] and desk.skills("toy") == ["add", "rev"]
        assert str(world / "zoo" / "proctora") not in desk.local_models()  # the judge is not a candidate
        item = desk.item("toy", "add/add_000")
        text = desk.generate_local(item, str(world / "zoo" / "spec_add"))
        assert text.strip() and text == desk.generate_local(item, str(world / "zoo" / "spec_add"))  # greedy
        assert desk.grade(item, text).replies
    finally:
        desk.close()


def test_desk_answers_through_an_openai_compatible_endpoint(world, monkeypatch):
    """A real HTTP server on 127.0.0.1 that answers like a chat server (what it is sent is checked)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mergeval.audit.rubric import Desk

    seen = []

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers.get("Authorization"),
                         json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": " 22 "}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from mergeval.inputs.items import load_items

        item = {it.id: it for it in load_items(world / "items" / "toy")}["add/add_000"]
        monkeypatch.setenv("RUBRIC_TEST_KEY", "sk-test")
        text = Desk.generate_remote(item, f"http://127.0.0.1:{server.server_port}/v1/", "served", "RUBRIC_TEST_KEY")
    finally:
        server.shutdown()
    assert text == "22"
    path, auth, body = seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "served" and body["temperature"] == 0
    assert body["messages"][-1] == {"role": "user", "content": item.question}
