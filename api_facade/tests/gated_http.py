"""A real HTTP server on loopback whose files are served only once their gate opens.

An item whose input is a gated URL is running (its worker is downloading it) for as long as
the test keeps the gate shut, so a test can kill a worker, or the service, mid-item without
guessing how long an item takes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: How long a request waits for its gate before the server gives up on it (seconds).
GATE_TIMEOUT_S = 300.0


class GatedFiles:
    def __init__(self, server: ThreadingHTTPServer, files: dict[str, Path]) -> None:
        self._server = server
        self._files = files
        self._gates = {name: threading.Event() for name in files}
        self.requests: Counter[str] = Counter()  # GETs per file name: one per attempt at an item
        self._arrived = threading.Condition()

    def url(self, name: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def open(self, *names: str) -> None:
        for name in names or self._files:
            self._gates[name].set()

    def close(self, *names: str) -> None:
        for name in names or self._files:
            self._gates[name].clear()

    def wait_requested(self, name: str, times: int = 1, timeout_s: float = 120.0) -> None:
        """Until ``name`` has been requested ``times`` times (a worker is reading it)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.requests[name] >= times, timeout_s):
                raise AssertionError(
                    f"{name} requested {self.requests[name]} times, not {times}, in {timeout_s} s"
                )

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/")
        if name not in self._files:
            handler.send_error(404)
            return
        body = self._files[name].read_bytes()
        with self._arrived:
            self.requests[name] += 1
            self._arrived.notify_all()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        if self._gates[name].wait(GATE_TIMEOUT_S):
            try:
                handler.wfile.write(body)
            except OSError:  # the reader is gone (its worker was killed)
                pass


@contextmanager
def gated_files(files: dict[str, Path]) -> Iterator[GatedFiles]:
    """Serve ``files`` (name -> path) on 127.0.0.1 behind gates, all shut."""
    gated: GatedFiles

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server name
            gated._serve(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    gated = GatedFiles(server, files)
    thread = threading.Thread(target=server.serve_forever, name="gated-http", daemon=True)
    thread.start()
    try:
        yield gated
    finally:
        gated.open()
        server.shutdown()
        server.server_close()
