"""`python -m testbed.receiver --port P --record FILE`: a notification receiver.

A real HTTP server on loopback that records, in arrival order, every connection it
accepts and every request it reads (method, path, headers, body, the status it
answers), one JSON object per line in FILE, written before it answers. It can fail
on command:

- `--fail-first N`: answer the first N requests with `--status` (default 503),
  then 200; without `--fail-first`, `--status` answers every request;
- `--retry-after S`: send `Retry-After: S` with each failure;
- `--delay S`: wait S seconds before answering each request (a hanging receiver).

Failures carry a body that a client must never show (FAILURE_BODY). It prints
"listening on PORT" once it accepts connections, so a test need not connect to
learn that (a connection would be recorded).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAILURE_BODY = b"receiver-internal-detail: must never reach status or logs"
MAX_BODY = 1024 * 1024


class Recorder:
    def __init__(self, path: Path, fail_first: int | None, status: int | None) -> None:
        self.path, self.fail_first, self.status = path, fail_first, status
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        path.write_text("")

    def write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps(entry) + "\n")
            out.flush()

    def connection(self, client: tuple[str, int]) -> None:
        with self.lock:
            self.connections += 1
            self.write({"kind": "connection", "n": self.connections, "client": client[0]})

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """Record a request and decide its answer, atomically (arrival order)."""
        with self.lock:
            self.requests += 1
            code = self._answer(self.requests)
            entry = {
                "kind": "request",
                "n": self.requests,
                "method": method,
                "path": path,
                "headers": headers,
                "body": body.decode(errors="replace"),
                "status": code,
            }
            self.write(entry)
            return code

    def _answer(self, n: int) -> int:
        failing = self.status or 503
        if self.fail_first is None:
            return self.status or 200
        return failing if n <= self.fail_first else 200


def handler(recorder: Recorder, delay: float, retry_after: str | None) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length)
            code = recorder.request(self.command, self.path, dict(self.headers.items()), body)
            if delay:
                time.sleep(delay)
            answer = b"ok" if code < 300 else FAILURE_BODY
            self.send_response(code)
            if code >= 300 and retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = do_PUT = do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the record file is the log

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: Recorder

    def process_request(self, request: Any, client_address: Any) -> None:
        self.recorder.connection(client_address)
        super().process_request(request, client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--fail-first", type=int, default=None, metavar="N")
    parser.add_argument("--status", type=int, default=None, metavar="CODE")
    parser.add_argument("--retry-after", default=None, metavar="S")
    parser.add_argument("--delay", type=float, default=0.0, metavar="S")
    args = parser.parse_args()
    recorder = Recorder(args.record, args.fail_first, args.status)
    server = Server(("127.0.0.1", args.port), handler(recorder, args.delay, args.retry_after))
    server.recorder = recorder
    print(f"listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
