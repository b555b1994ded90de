"""`python -m testbed.authproxy`: Prometheus behind TLS, a bearer token and a tenant
header, as a hosted Prometheus (Mimir, Cortex, Thanos behind a gateway) sits.

It answers 401 without the token, 400 without the header, and otherwise forwards
the request to the upstream Prometheus. It stops by itself after `--lifetime`.
"""

from __future__ import annotations

import argparse
import ssl
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testbed.serving import serve_until


def handler(upstream: str, token: str, header: str, tenant: str) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def _forward(self, body: bytes | None) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(401, b'{"status":"error","error":"bad or missing bearer token"}')
                return
            if self.headers.get(header) != tenant:
                self._answer(400, f'{{"status":"error","error":"no {header}"}}'.encode())
                return
            request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
            if body is not None:
                request.add_header("Content-Type", self.headers.get("Content-Type", ""))
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    self._answer(response.status, response.read())
            except urllib.error.HTTPError as error:
                self._answer(error.code, error.read())

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Proxy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--header", default="X-Scope-OrgID")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--lifetime", type=float, default=900)
    args = parser.parse_args()
    proxy = handler(args.upstream.rstrip("/"), args.token, args.header, args.tenant)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), proxy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    serve_until(server, args.lifetime)


if __name__ == "__main__":
    main()
