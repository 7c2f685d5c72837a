"""A counting, fault-injecting HTTP proxy on 127.0.0.1 for tests.

It forwards every request to a real upstream (Orthanc) and records how many
were in flight at once, so a test can check the cap on the wire rather than
trusting the client's own counters. ``faults`` is a queue of canned answers
(status, headers) served instead of forwarding, for retry and backoff tests;
``fail_paths`` maps a path to a status answered every time; ``delay`` slows
every forwarded request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class CountingProxy:
    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.faults: deque[tuple[int, dict[str, str]]] = deque()
        self.fail_paths: dict[str, int] = {}  # path -> status, answered every time
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.forwarded = 0
        self.answered_faults = 0
        self.paths: list[str] = []  # forwarded, whatever the outcome
        self.answered: list[tuple[str, int]] = []  # (path, status) from upstream
        self._session = requests.Session()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.forwarded = self.answered_faults = 0
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
                with proxy.lock:
                    path = self.path.split("?", 1)[0]
                    if path in proxy.fail_paths:
                        fault = (proxy.fail_paths[path], {})
                    else:
                        fault = proxy.faults.popleft() if proxy.faults else None
                    if fault:
                        proxy.answered_faults += 1
                    else:
                        proxy.in_flight += 1
                        proxy.forwarded += 1
                        proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                        proxy.paths.append(self.path)
                if fault:
                    status, headers = fault
                    self.send_response(status)
                    for k, v in {**headers, "Content-Length": "0"}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    return
                try:
                    time.sleep(proxy.delay)
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
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
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
