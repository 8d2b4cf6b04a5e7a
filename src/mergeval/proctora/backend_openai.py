"""Any OpenAI-compatible chat server as the judge: llama.cpp, vLLM, Ollama, KoboldCpp,
text-generation-webui, `transformers serve`, or a hosted API.

    backend: openai
    endpoint: http://127.0.0.1:8000/v1      # POST {endpoint}/chat/completions
    api_key_env: MY_JUDGE_KEY               # optional: the NAME of the variable with the key

Plain httpx, so what is retried is visible here: connection errors, timeouts, 429, 5xx and
a 2xx whose body is not a chat completion are retried with exponential back-off (Retry-After
honoured); any other 4xx is not. Requests run `concurrency` at a time. Once one request has
used up its retries, the rest are not sent: the judge is down, and the caller stops with
JudgeUnavailable instead of grading every answer "unscored". Token logprobs are asked for and
used when the server sends them.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from mergeval.proctora.backend_base import (
    Completion,
    JudgeUnavailable,
    Messages,
    call_seed,
    call_temperature,
    clean_token,
    normalise,
)
from mergeval.proctora.parse import parse_verdict
from mergeval.proctora.settings import JudgeSettings

BACKOFF_BASE_S = 0.5  # 0.5, 1, 2, 4 ... seconds between tries
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60.0
TOP_LOGPROBS = 20  # the most OpenAI allows; enough to hold every score of a 1..10 scale
FATAL_STATUS = {401: "the key was refused", 403: "access denied", 404: "not found (check endpoint and model)"}


class OpenAIBackend:
    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.endpoint = settings.endpoint or ""
        timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0))
        limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
        self._client = httpx.Client(timeout=timeout, limits=limits)
        self._logprobs = settings.logprobs

    def close(self) -> None:
        self._client.close()

    def _headers(self) -> dict[str, str]:
        if not self.settings.api_key_env:
            return {}
        key = self.settings.api_key()
        if not key:
            raise JudgeUnavailable(f"environment variable {self.settings.api_key_env} (the judge's API key) is not set")
        return {"Authorization": f"Bearer {key}"}

    # -- liveness ---------------------------------------------------------------------------

    def check_alive(self) -> None:
        """One cheap GET {endpoint}/models; a server without that route gets a 1-token chat."""
        url = f"{self.endpoint}/models"
        try:
            r = self._client.get(url, headers=self._headers(), timeout=min(self.settings.timeout_s, 10.0))
        except httpx.HTTPError as e:
            raise JudgeUnavailable(f"judge endpoint {self.endpoint} is not reachable ({type(e).__name__}: {e})") from e
        if r.status_code in (401, 403):
            raise JudgeUnavailable(f"judge endpoint {self.endpoint}: HTTP {r.status_code}, {FATAL_STATUS[r.status_code]}")
        if r.status_code < 400:
            return
        probe = self._one([{"role": "user", "content": "ping"}], seed=0, temperature=0.0, max_tokens=1, down=threading.Event())
        if probe.error:
            raise JudgeUnavailable(f"judge endpoint {self.endpoint}: {probe.error}")

    # -- calls ------------------------------------------------------------------------------

    def complete(self, prompts: list[Messages], *, sample_index: int, attempt: int = 0) -> list[Completion]:
        s = self.settings
        seed = call_seed(s.seed, sample_index, attempt)
        temperature = call_temperature(s.temperature, s.reask_temperature, attempt)
        down = threading.Event()  # set when the server is judged down: stop sending

        def one(messages: Messages) -> Completion:
            return self._one(messages, seed=seed, temperature=temperature, max_tokens=s.max_tokens, down=down)

        if len(prompts) <= 1 or s.concurrency == 1:
            return [one(m) for m in prompts]
        with ThreadPoolExecutor(max_workers=min(s.concurrency, len(prompts))) as pool:
            return list(pool.map(one, prompts))

    def _one(self, messages: Messages, *, seed: int, temperature: float, max_tokens: int, down: threading.Event) -> Completion:
        s = self.settings
        headers = self._headers()
        last = ""
        tries = s.http_retries + 1
        for k in range(tries):
            if down.is_set():
                return Completion("", error="not sent: the judge endpoint failed on another request", fatal=True)
            body = {"model": s.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
            if self._logprobs:
                body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
            wait = BACKOFF_BASE_S * 2**k
            try:
                r = self._client.post(f"{self.endpoint}/chat/completions", json=body, headers=headers)
            except httpx.HTTPError as e:  # connection refused, reset, timeout
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                reply = self._reply(r) if r.status_code < 400 else None
                if reply is not None:
                    return reply
                if r.status_code < 400:  # an HTML error page, a cut-off body: the transport, not the judge
                    last = f"HTTP {r.status_code} with a body that is not a chat completion: {r.text[:300]}"
                elif r.status_code == 429 or r.status_code >= 500:
                    last = f"HTTP {r.status_code}: {r.text[:300]}"
                    wait = max(wait, _retry_after(r))
                elif self._logprobs and r.status_code in (400, 422) and "logprob" in r.text.lower():
                    self._logprobs = False  # a server that refuses logprobs: ask again without them
                    return self._one(messages, seed=seed, temperature=temperature, max_tokens=max_tokens, down=down)
                else:
                    why = FATAL_STATUS.get(r.status_code, "the judge refused this request")
                    return Completion("", error=f"HTTP {r.status_code}, {why}: {r.text[:300]}", fatal=r.status_code in FATAL_STATUS)
            if k + 1 < tries:
                time.sleep(min(wait, BACKOFF_MAX_S))
        down.set()
        return Completion("", error=f"judge endpoint {self.endpoint} failed {tries} times; last: {last}", fatal=True)

    def _reply(self, r: httpx.Response) -> Completion | None:
        """The reply's text; None for a body that is not a chat completion.

        Such a body (a proxy's error page, a truncated stream) says nothing about the answer:
        it is retried like a 5xx and never kept, so it cannot become a cached unscored grade.
        """
        try:
            choice = r.json()["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None
        probs = self._verdict_probs(text, choice.get("logprobs")) if self._logprobs else None
        return Completion(text=text, verdict_probs=probs, truncated=choice.get("finish_reason") == "length")

    def _verdict_probs(self, text: str, logprobs) -> dict[int, float] | None:
        """P(each score) from the top logprobs at the token holding the verdict's number."""
        try:
            tokens = logprobs["content"]
            verdict = parse_verdict(text, self.settings.scale)
            if verdict.score is None or not tokens:
                return None
            pos = 0
            for entry in tokens:  # the tokens' texts concatenate to the reply
                end = pos + len(entry["token"])
                if pos <= verdict.at < end:
                    break
                pos = end
            else:
                return None
            if clean_token(entry["token"]) != str(verdict.score):
                return None
            low, high = self.settings.scale
            probs = {n: 0.0 for n in range(low, high + 1)}
            for alt in entry.get("top_logprobs") or [entry]:
                word = clean_token(alt["token"])
                if word.lstrip("-").isdigit() and low <= int(word) <= high:
                    probs[int(word)] += math.exp(alt["logprob"])
            return normalise(probs)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a server whose logprobs look different: no weighted score, no error


def _retry_after(r: httpx.Response) -> float:
    try:
        return min(float(r.headers.get("retry-after", 0)), RETRY_AFTER_MAX_S)
    except ValueError:
        return 0.0
