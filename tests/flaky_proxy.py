"""A small HTTP proxy on 127.0.0.1 that makes a real judge server misbehave on purpose.

    proxy = FlakyProxy("http://127.0.0.1:8000")      # the real server (e.g. `transformers serve`)
    proxy.url                                        # point the judge's `endpoint:` here
    proxy.outage([("refuse", 0.5), ("500", 3)], after=20)   # after 20 good calls: refuse for
    proxy.heal()                                             # 0.5 s, then 3 requests get a 500

Everything passes through to the real server except the faults it is told to play. An outage
is a list of phases that starts at the first chat request after `after` ones have passed
through; `math.inf` lasts until heal(). Kinds, and what a phase's number counts:
  refuse   — seconds the listening socket is closed: new connections are refused
  slow     — requests held `slow_s` (past the client's timeout), then their socket reset
  500      — requests answered HTTP 500 with a JSON error body
  garbage  — requests answered HTTP 200 with an HTML page, not a chat completion
Faults that answer are counted in requests, not seconds, so that each one is really played
whatever the client's back-off timing.
A request whose body contains `no_verdict_for` gets a well-formed chat completion whose text
holds no verdict: what a confused judge would say, as opposed to a broken transport.
Responses are HTTP/1.0 (one request per connection), so a refusal really refuses.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

NO_VERDICT_TEXT = "I cannot tell how good this answer is."
KINDS = ("refuse", "slow", "500", "garbage")


class FlakyProxy:
    def __init__(self, upstream: str, slow_s: float = 4.0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.slow_s = slow_s
        self.no_verdict_for: str | None = None
        self.counts: Counter = Counter()  # "passed" (chat calls that reached the server) and each fault played
        self.calls: list[tuple[str, str]] = []  # (what was done, sha1 of the request body) per chat call
        self._lock = threading.Lock()
        self._fault: str | None = None  # the phase being played now
        self._pending: tuple[list, int] | None = None  # an outage waiting for its start
        self._healed = threading.Event()
        self._left: float = 0  # requests the current answering fault is still played to
        self._played = threading.Event()
        self._server = self._listen(0)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    # -- control ------------------------------------------------------------------------------

    def outage(self, phases: list[tuple[str, float]], after: int = 0) -> None:
        assert all(kind in KINDS for kind, _ in phases), phases
        with self._lock:
            self._healed.clear()
            self._pending = (list(phases), self.counts["passed"] + after)

    def down(self) -> None:
        """Refuse every connection from now until heal()."""
        with self._lock:
            self._healed.clear()
            self._pending, self._fault = None, "refuse"
        self._stop_listening()

    def bodies(self, what: str, since: int = 0) -> set[str]:
        """The distinct requests (by body) that got `what` ("passed", "no_verdict", a fault)."""
        return {body for kind, body in self.calls[since:] if kind == what}

    def heal(self) -> None:
        with self._lock:
            self._pending, self._fault = None, None
        self._healed.set()
        self._ensure_listening()

    def close(self) -> None:
        self.heal()
        self._server.shutdown()
        self._server.server_close()

    # -- the outage's timeline (a thread, so that "refuse" can close and reopen the socket) ------

    def _start_if_due(self) -> None:
        with self._lock:
            if self._pending is None or self.counts["passed"] < self._pending[1]:
                return
            phases, self._pending = self._pending[0], None
            self._fault = phases[0][0]
        threading.Thread(target=self._play, args=(phases,), daemon=True).start()

    def _play(self, phases: list[tuple[str, float]]) -> None:
        for kind, amount in phases:
            played = threading.Event()
            with self._lock:
                if self._healed.is_set():
                    return
                self._fault, self._left, self._played = kind, amount, played
            if kind == "refuse":
                self._stop_listening()
                self._healed.wait(None if math.isinf(amount) else amount)
                self._ensure_listening()
            else:  # until `amount` requests got this fault (or heal())
                while not (played.wait(0.05) or self._healed.is_set()):
                    pass
        with self._lock:
            if not self._healed.is_set():
                self._fault = None

    def _took_fault(self, fault: str) -> bool:
        """Count one request served `fault`; False when the phase had already run out."""
        with self._lock:
            if fault in ("refuse", "no_verdict"):
                return True
            if self._fault != fault or self._left <= 0:
                return False
            self._left -= 1
            if self._left <= 0 and not math.isinf(self._left):
                self._played.set()
            return True

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def _stop_listening(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._server is None:
                self._server = self._listen(self.port)  # same port: the judge's endpoint is fixed

    # -- requests ---------------------------------------------------------------------------------

    def _forward(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("Content-Type", "application/json")
        finally:
            conn.close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def reply(self, code: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up first (a timeout)
                    pass

            def reset(self) -> None:
                """Close with RST, as a crashed server or a dropped link would."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def passthrough(self, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                self.reply(*proxy._forward(self.command, self.path, body, headers))

            def do_GET(self):
                if proxy._fault == "refuse":
                    return self.reset()
                self.passthrough(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy._start_if_due()
                fault = proxy._fault
                if fault is not None and not proxy._took_fault(fault):
                    fault = None  # the phase ran out while this request came in
                if fault is None and proxy.no_verdict_for and proxy.no_verdict_for.encode() in body:
                    fault = "no_verdict"
                with proxy._lock:
                    proxy.counts[fault or "passed"] += 1
                    proxy.calls.append((fault or "passed", hashlib.sha1(body).hexdigest()))
                if fault == "refuse":
                    return self.reset()
                if fault == "slow":
                    time.sleep(proxy.slow_s)
                    return self.reset()
                if fault == "500":
                    return self.reply(500, json.dumps({"error": "injected by the flaky proxy"}).encode())
                if fault == "garbage":
                    return self.reply(200, b"<html><body>502 Bad Gateway (nginx)</body></html>", "text/html")
                if fault == "no_verdict":
                    choice = {"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": NO_VERDICT_TEXT}}
                    return self.reply(200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())
                self.passthrough(body)

        return Handler
