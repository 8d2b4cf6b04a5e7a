"""Proctora end to end: the transformers backend on a tiny local judge, the openai backend
against real HTTP servers on 127.0.0.1 (one that fails on purpose, and `transformers serve`),
re-asks, unscored results, and the on-disk call cache.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mergeval.core.workspace import Workspace
from mergeval.proctora import backend_openai
from mergeval.proctora.judge import Judge, JudgeRequest, JudgeUnavailable
from mergeval.proctora.settings import JudgeSettings
from tests import serve

# -- a tiny judge that really grades: "good" -> [RESULT] 5, "bad" -> [RESULT] 1 -------------

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "[RESULT]"] + [str(i) for i in range(10)] + ["good", "bad", "ugly", "odd", "x", "y", "z"]
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"
REPLIES = {"good": "[RESULT] 5", "bad": "[RESULT] 1", "ugly": "bad bad", "odd": "[RESULT] 9"}


def make_judge_model(path: Path) -> Path:
    """LlamaConfig hidden 32, 2 layers, WordLevel tokenizer with [RESULT] and digits; ~300
    steps (about a second) teach it the replies above after up to 4 filler words."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    words = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    words.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = random.Random(0)
    for _ in range(300):
        rows = []
        for _ in range(16):
            kind = rng.choice(list(REPLIES))
            prompt = " ".join([rng.choice("xyz") for _ in range(rng.randint(0, 4))] + [kind])
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            rows.append((tok(text, add_special_tokens=False)["input_ids"], tok(REPLIES[kind] + " </s>", add_special_tokens=False)["input_ids"]))
        width = max(len(p) + len(t) for p, t in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (p, t) in enumerate(rows):
            ids[r, : len(p) + len(t)] = torch.tensor(p + t)
            mask[r, : len(p) + len(t)] = 1
            labels[r, len(p) : len(p) + len(t)] = torch.tensor(t)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory) -> Path:
    return make_judge_model(tmp_path_factory.mktemp("proctora") / "judge")


def local(model: Path, **kw) -> JudgeSettings:
    return JudgeSettings(**({"model": str(model), "max_tokens": 8, "batch_size": 2, "device": "cpu"} | kw))


def ask(*prompts: str) -> list[JudgeRequest]:
    return [JudgeRequest(p) for p in prompts]


# -- transformers backend ---------------------------------------------------------------------


def test_transformers_grades_reasks_and_caches(judge_model, tmp_path):
    ws, cache = Workspace(tmp_path), tmp_path / "calls"
    prompts = ask("good", "x y z bad", "ugly", "x odd", "z good")  # mixed lengths: left padding
    with Judge(local(judge_model), ws, cache_dir=cache) as judge:
        judge.check_alive()
        good, bad, ugly, odd, good2 = results = judge.grade(prompts)
        assert judge.calls_executed == 5 + 2 * 2  # ugly and odd are asked twice more
    assert (good.scores, good.score, good.replies, good.unscored_reason) == ((5,), 5.0, ("[RESULT] 5",), None)
    assert (bad.score, good2.score) == (1.0, 5.0)
    assert good.weighted_score > 4.5 and bad.weighted_score < 1.5  # P(score) at the verdict token
    assert good.prompt == "good" and not good.unstable and good.spread == 0.0
    # Unreadable and out-of-range verdicts: unscored with the reason and the raw reply, never 0.
    assert (ugly.score, ugly.scores, ugly.replies) == (None, (None,), ("bad bad",))
    assert "no verdict" in ugly.unscored_reason and "asked 3 times" in ugly.unscored_reason
    assert odd.score is None and "outside the scale 1..5" in odd.unscored_reason
    assert odd.weighted_score is None and odd.replies == ("[RESULT] 9",)
    # Same settings, new process-like Judge: every call comes from the cache.
    with Judge(local(judge_model), ws, cache_dir=cache) as again:
        assert again.grade(prompts) == results
        assert (again.calls_executed, again.calls_cached) == (0, 9)
    # A corrupt cache file is a miss, made again and rewritten.
    files = sorted(cache.rglob("*.json"))
    assert len(files) == 9
    for f in files:
        f.write_text("{not json")
    with Judge(local(judge_model), ws, cache_dir=cache) as third:
        assert third.grade(prompts[:1])[0].score == 5.0 and third.calls_executed == 1


def test_transformers_samples_and_unreadable_model(judge_model, tmp_path):
    settings = local(judge_model, samples=3, temperature=1.0)
    with Judge(settings, Workspace(tmp_path), cache_dir=None) as judge:
        [r] = judge.grade(ask("x good"))
    assert len(r.scores) == len(r.replies) == 3 and judge.calls_executed >= 3
    scored = [s for s in r.scores if s is not None]
    assert r.spread == max(scored) - min(scored) and r.score == pytest.approx(sum(scored) / len(scored))


def test_transformers_missing_model_is_unavailable(tmp_path):
    with Judge(local(tmp_path / "zoo" / "proctora"), Workspace(tmp_path)) as judge:
        with pytest.raises(JudgeUnavailable, match="judge model folder not found"):
            judge.check_alive()
        with pytest.raises(JudgeUnavailable):
            judge.grade(ask("good"))


# -- openai backend against a server that misbehaves on purpose ----------------------------------


class FakeServer:
    """An OpenAI-style chat server on 127.0.0.1 that plays a script, one action per POST:
    ("status", code[, body]), ("sleep", s) then reply, ("reply", text[, logprobs]),
    ("raw", body); when the script is empty it replies `default`."""

    def __init__(self, default: str = "[RESULT] 4"):
        self.script: list[tuple] = []
        self.default = default
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.inflight = self.max_inflight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                for k, v in (headers or {"Content-Type": "application/json"}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def do_GET(self):
                self.send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    action = server.script.pop(0) if server.script else ("reply", server.default)
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    self.play(action)
                finally:
                    with server.lock:
                        server.inflight -= 1

            def play(self, action):
                kind = action[0]
                if kind == "status":
                    detail = action[2] if len(action) > 2 else "nope"
                    self.send(action[1], json.dumps({"error": detail}).encode(), {"Retry-After": "0"})
                elif kind == "raw":
                    self.send(200, action[1], {"Content-Type": "text/html"})
                else:
                    if kind == "sleep":
                        time.sleep(action[1])
                    text = action[1] if kind == "reply" else server.default
                    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    if kind == "reply" and len(action) > 2:
                        choice["logprobs"] = {"content": action[2]}
                    self.send(200, json.dumps({"choices": [choice]}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(backend_openai, "BACKOFF_BASE_S", 0.01)
    s = FakeServer()
    yield s
    s.close()


def served(server: FakeServer, **kw) -> JudgeSettings:
    fields = dict(backend="openai", model="m", endpoint=server.url, timeout_s=2.0, http_retries=2, retries_unparseable=1)
    return JudgeSettings(**(fields | kw))


def grade_one(settings: JudgeSettings, prompt: str = "grade this", cache_dir: Path | None = None):
    with Judge(settings, Workspace(Path.cwd()), cache_dir=cache_dir) as judge:
        [result] = judge.grade(ask(prompt))
        return result, judge


def test_openai_5xx_and_429_are_retried(server):
    server.script = [("status", 500), ("status", 503), ("status", 429)]
    result, judge = grade_one(served(server, http_retries=3))
    assert result.score == 4.0 and len(server.bodies) == 4 and judge.calls_executed == 1
    body = server.bodies[0]
    assert (body["model"], body["temperature"], body["max_tokens"], body["logprobs"]) == ("m", 0.0, 512, True)
    assert body["messages"] == [{"role": "user", "content": "grade this"}] and "seed" in body


def test_openai_timeout_is_retried(server):
    server.script = [("sleep", 0.8)]
    result, _ = grade_one(served(server, timeout_s=0.25))
    assert result.score == 4.0 and len(server.bodies) == 2


def test_openai_endpoint_failing_every_time_is_unavailable_not_unscored(server):
    server.script = [("sleep", 0.6)] * 2 + [("status", 502)] * 9
    with Judge(served(server, timeout_s=0.2, http_retries=1, concurrency=1), Workspace(Path.cwd())) as judge:
        with pytest.raises(JudgeUnavailable, match="failed 2 times"):
            judge.grade(ask("a", "b", "c"))
    assert len(server.bodies) == 2  # once down, the other requests are not sent


def test_openai_garbage_replies_are_unscored_after_bounded_reasks(server):
    server.default = "I would rather not grade this."
    result, judge = grade_one(served(server, retries_unparseable=2))
    assert len(server.bodies) == 3 and judge.calls_executed == 3
    assert result.score is None and result.scores == (None,) and result.replies == ("I would rather not grade this.",)
    assert "no verdict" in result.unscored_reason and "asked 3 times" in result.unscored_reason
    # Re-asks change the seed and sample (a greedy re-ask would repeat itself).
    assert len({b["seed"] for b in server.bodies}) == 3
    assert [b["temperature"] for b in server.bodies] == [0.0, 0.7, 0.7]


def test_openai_body_that_is_not_a_completion_is_retried_never_kept(server, tmp_path):
    server.script = [("raw", b"<html>502 from a proxy</html>")]
    result, _ = grade_one(served(server))
    assert result.score == 4.0 and len(server.bodies) == 2
    assert server.bodies[0] == server.bodies[1]  # the same call again (a transport retry), not a re-ask
    # A proxy that only ever sends error pages is a judge that is down, not an unscored answer.
    server.script = [("raw", b"<html>502 from a proxy</html>")] * 3
    with pytest.raises(JudgeUnavailable, match="not a chat completion"):
        grade_one(served(server), cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.json"))  # nothing cached


def test_openai_4xx_is_not_retried(server):
    server.script = [("status", 400, "prompt is longer than the context")]
    result, judge = grade_one(served(server))
    assert len(server.bodies) == 1 and judge.calls_executed == 1
    assert result.score is None and "HTTP 400" in result.unscored_reason and "context" in result.unscored_reason
    server.script = [("status", 401)]
    with pytest.raises(JudgeUnavailable, match="HTTP 401"):
        grade_one(served(server))
    assert len(server.bodies) == 2


def test_openai_logprobs_give_a_weighted_score(server):
    import math

    def tok(t, p, top=()):
        return {"token": t, "logprob": math.log(p), "top_logprobs": [{"token": a, "logprob": math.log(q)} for a, q in top]}

    content = [tok("Fine", 0.9), tok(".", 0.9), tok(" [RESULT]", 0.99),
               tok(" 4", 0.6, [(" 4", 0.6), (" 5", 0.3), (" 3", 0.1), (" the", 0.01)])]
    server.script = [("reply", "Fine. [RESULT] 4", content), ("reply", "Fine. [RESULT] 4", content[:2])]
    result, _ = grade_one(served(server))
    assert result.score == 4.0 and result.weighted_score == pytest.approx(4.2, abs=0.01)
    result, _ = grade_one(served(server), prompt="other")  # logprobs that miss the verdict: tolerated
    assert result.score == 4.0 and result.weighted_score is None


def test_openai_server_refusing_logprobs_is_asked_without_them(server):
    server.script = [("status", 422, "Unexpected fields in the request: {'logprobs'}")]
    result, _ = grade_one(served(server))
    assert result.score == 4.0 and len(server.bodies) == 2 and "logprobs" not in server.bodies[1]


def test_openai_samples_spread_and_cache(server, tmp_path):
    server.script = [("reply", "[RESULT] 1"), ("reply", "[[5]]"), ("reply", '{"score": 3}')]
    settings = served(server, samples=3, concurrency=1)
    result, judge = grade_one(settings, cache_dir=tmp_path)
    assert (result.scores, result.score, result.spread, result.unstable) == ((1, 5, 3), 3.0, 4.0, True)
    again, judge2 = grade_one(settings, cache_dir=tmp_path)
    assert again == result and (judge2.calls_executed, judge2.calls_cached) == (0, 3) and len(server.bodies) == 3


def test_openai_concurrency_is_bounded(server):
    server.script = [("sleep", 0.25)] * 6
    with Judge(served(server, concurrency=2), Workspace(Path.cwd())) as judge:
        results = judge.grade(ask(*"abcdef"))
    assert [r.score for r in results] == [4.0] * 6 and server.max_inflight == 2


def test_openai_key_comes_from_the_environment_and_is_never_stored(server, tmp_path, monkeypatch):
    settings = served(server, api_key_env="MERGEVAL_TEST_JUDGE_KEY")
    with Judge(settings, Workspace(tmp_path), cache_dir=tmp_path / "calls") as judge:
        with pytest.raises(JudgeUnavailable, match="MERGEVAL_TEST_JUDGE_KEY"):
            judge.check_alive()
    monkeypatch.setenv("MERGEVAL_TEST_JUDGE_KEY", "sk-secret-123")
    result, _ = grade_one(settings, cache_dir=tmp_path / "calls")
    assert result.score == 4.0 and server.auth == ["Bearer sk-secret-123"]
    stored = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert stored and "sk-secret-123" not in stored + settings.fingerprint()


def test_openai_endpoint_down_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    settings = JudgeSettings(backend="openai", model="m", endpoint=f"http://127.0.0.1:{port}/v1", timeout_s=1.0)
    with Judge(settings, Workspace(Path.cwd())) as judge:
        with pytest.raises(JudgeUnavailable, match="not reachable"):
            judge.check_alive()


# -- a real OpenAI-compatible server: `transformers serve` on the tiny judge -------------------


@pytest.fixture(scope="module")
def transformers_serve(judge_model, tmp_path_factory):
    """`transformers serve` on 127.0.0.1; its /v1 URL."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve.transformers_serve([str(judge_model)], log) as url:
        yield url


def test_transformers_serve_through_the_openai_backend(transformers_serve, judge_model, tmp_path):
    settings = JudgeSettings(backend="openai", model=str(judge_model), endpoint=transformers_serve, max_tokens=8)
    prompts = ask("good", "x y bad", "ugly")
    with Judge(settings, Workspace(tmp_path), cache_dir=tmp_path / "calls") as judge:
        judge.check_alive()
        served_results = judge.grade(prompts)
    with Judge(local(judge_model), Workspace(tmp_path)) as judge:
        local_results = judge.grade(prompts)
    assert [r.score for r in served_results] == [r.score for r in local_results] == [5.0, 1.0, None]
    assert [r.replies for r in served_results] == [r.replies for r in local_results]
    # transformers serve ignores logprobs (it says so in its log): no weighted score, no error.
    assert served_results[0].weighted_score is None
