"""`python -m testbed.gatehook`: the far end of a gate check's webhook.

Every POST is recorded as one JSON line in `--record` ({"path", "query", "body"}) the
moment it arrives, then answered as its query string says:

    ?status=409&reason=model+card+missing&delay=3

waits `delay` seconds (default 0), then answers `status` (default 200) with the JSON
body {"reason": reason} when a reason is given. So a test states in the URL it puts in
a rollout what its webhook answers, and reads afterwards what the operator sent and how
often. GET /healthz answers 200 once it listens. It stops by itself after `--lifetime`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def handler(record: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            line = json.dumps({"path": parts.path, "query": query, "body": body})
            with lock, record.open("a") as out:
                out.write(line + "\n")
            time.sleep(float(query.get("delay", 0)))
            answer = json.dumps({"reason": query["reason"]} if "reason" in query else {})
            self._answer(int(query.get("status", 200)), answer.encode())

        def do_GET(self) -> None:
            found = urlsplit(self.path).path == "/healthz"
            self._answer(200 if found else 404, b"{}")

        def _answer(self, code: int, body: bytes) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller gave up waiting (a timeout the test asked for)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Hook


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--lifetime", type=float, default=900)
    args = parser.parse_args()
    args.record.touch()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.record))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(args.lifetime)
    server.shutdown()


if __name__ == "__main__":
    main()
