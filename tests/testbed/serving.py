"""Small HTTP servers on loopback: the test bed's helper processes (`serve_until`) and
the tests' and benchmarks' in-process listeners (`LoopbackServer`)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_until(server: ThreadingHTTPServer, lifetime: float) -> None:
    """Answer requests on `server` for `lifetime` seconds, then return (a helper
    process's whole life: it ends on its own if the test that started it does not)."""
    server.timeout = 1
    deadline = time.monotonic() + lifetime
    while time.monotonic() < deadline:
        server.handle_request()


class LoopbackServer:
    """`handler` on 127.0.0.1:`port` (0: a free one) in a daemon thread until close()."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        port: int = 0,
        server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer,
    ) -> None:
        self.server = server_class(("127.0.0.1", port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
