"""A WSGI app served by werkzeug on 127.0.0.1:<free port> in a thread, for the
tests and the benchmarks (stopped cleanly by ``close``)."""

from __future__ import annotations

import threading

from werkzeug.serving import make_server


class Served:
    def __init__(self, wsgi_app) -> None:
        self._server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
