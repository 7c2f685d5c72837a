"""A counting, fault-injecting HTTP proxy on 127.0.0.1 for tests.

It forwards every request to a real upstream (Orthanc) and records how many
were in flight at once (and in ``peak`` which, since when, at the maximum),
so a test can check the cap on the wire rather than trusting the client's own
counters. ``faults`` is a queue of canned answers
(status, headers[, body]) served instead of forwarding, for retry and backoff tests;
``fail_paths`` maps a path to a status answered every time; ``delay`` slows
every forwarded request; ``chaos`` (a :class:`Chaos`) injects seeded random
faults: HTTP 500, 429 with ``Retry-After``, slow answers and connections
dropped without an answer. An upstream that does not answer (stopped) gets
a 502, as a reverse proxy would say.

Faults other than "slow" are answered by the proxy itself: the upstream
never sees those requests, so ``answered`` (what the upstream answered, per
path) tells how often an image really left Orthanc.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


@dataclass
class Chaos:
    """Seeded random faults, decided per (path, how many times the path came
    before): the same requests meet the same faults in every run, whatever
    order threads send them in.

    Rates are fractions of requests (their sum at most 1); a slow answer is
    forwarded after ``slow_seconds``; a 429 says ``Retry-After: retry_after``.
    ``only`` limits the faults to paths containing one of its strings."""

    seed: int = 7
    error_rate: float = 0.10  # HTTP 500, no body (not Orthanc's JSON error)
    throttle_rate: float = 0.05  # HTTP 429 with Retry-After
    slow_rate: float = 0.05
    drop_rate: float = 0.03  # connection closed without an answer
    slow_seconds: float = 0.5
    retry_after: int = 1
    only: tuple[str, ...] = ()
    seen: Counter = field(default_factory=Counter)  # path -> requests so far
    injected: Counter = field(default_factory=Counter)  # fault -> times

    def decide(self, method: str, path: str) -> str:
        """ "500", "429", "slow", "drop" or "" (forward as is). Thread-safe
        when called under the proxy's lock."""
        if self.only and not any(s in path for s in self.only):
            return ""
        n = self.seen[(method, path)]
        self.seen[(method, path)] += 1
        roll = random.Random(f"{self.seed}:{method}:{path}:{n}").random()
        for fault, rate in (
            ("500", self.error_rate),
            ("429", self.throttle_rate),
            ("drop", self.drop_rate),
            ("slow", self.slow_rate),
        ):
            if roll < rate:
                self.injected[fault] += 1
                return fault
            roll -= rate
        return ""


class CountingProxy:
    def __init__(
        self, upstream: str, delay: float = 0.0, chaos: Chaos | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.chaos = chaos
        self.faults: deque[tuple] = deque()  # (status, headers[, body])
        self.fail_paths: dict[str, int] = {}  # path -> status, answered every time
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.peak: list[tuple[float, str]] = []  # (since, path) in flight at the max
        self._open: dict[int, tuple[float, str]] = {}  # request -> (since, path)
        self.forwarded = 0
        self.answered_faults = 0
        self.paths: list[str] = []  # forwarded, whatever the outcome
        self.answered: list[tuple[str, int]] = []  # (path, status) from upstream
        self.upstream_errors = 0  # upstream did not answer: 502 sent
        self._session = requests.Session()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def files(self, served: bool = True) -> Counter:
        """Instance files per Orthanc id: those the upstream answered 200 (an
        image that left Orthanc), or with ``served=False`` every one
        forwarded, in the order asked (a 502 for an upstream that did not
        answer, then the client's retry, counts twice there)."""
        with self.lock:
            if served:
                paths = [p for p, status in self.answered if status == 200]
            else:
                paths = list(self.paths)
        return Counter(
            p.split("/")[2] for p in paths if p.split("?", 1)[0].endswith("/file")
        )

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.peak = sorted(self._open.values())
            self.forwarded = self.answered_faults = self.upstream_errors = 0
            self.paths.clear()
            self.answered.clear()
            self.faults.clear()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                slow = 0.0
                with proxy.lock:
                    path = self.path.split("?", 1)[0]
                    chaos = (
                        proxy.chaos.decide(self.command, path) if proxy.chaos else ""
                    )
                    if path in proxy.fail_paths:
                        fault = (proxy.fail_paths[path], {})
                    elif proxy.faults:
                        fault = proxy.faults.popleft()
                    elif chaos == "500":
                        fault = (500, {})
                    elif chaos == "429":
                        fault = (429, {"Retry-After": str(proxy.chaos.retry_after)})
                    elif chaos == "drop":
                        fault = (0, {})
                    else:
                        fault = None
                        if chaos == "slow":
                            slow = proxy.chaos.slow_seconds
                    if fault:
                        proxy.answered_faults += 1
                    else:
                        proxy.in_flight += 1
                        proxy.forwarded += 1
                        proxy._open[id(self)] = (time.monotonic(), self.path)
                        if proxy.in_flight > proxy.max_in_flight:
                            proxy.max_in_flight = proxy.in_flight
                            proxy.peak = sorted(proxy._open.values())
                        proxy.paths.append(self.path)
                if fault and not fault[0]:  # dropped: no answer at all
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault:
                    status, headers, *rest = fault
                    body = rest[0] if rest else b""
                    self.send_response(status)
                    for k, v in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                try:
                    time.sleep(proxy.delay + slow)
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("host", "content-length")
                    }
                    answer = proxy._session.request(
                        self.command,
                        proxy.upstream + self.path,
                        data=body,
                        headers=headers,
                        timeout=30,
                    )
                except requests.ConnectionError:  # upstream stopped
                    with proxy.lock:
                        proxy.upstream_errors += 1
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                        proxy._open.pop(id(self), None)
                with proxy.lock:
                    proxy.answered.append((self.path, answer.status_code))
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _serve

        return Handler
