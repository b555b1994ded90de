"""`python -m testbed.synthetic --port P --series FILE`: one process serving the
request, latency and feature series of many deployments at once, for scale benchmarks.

FILE is JSON: {"deployments": [{"namespace": ..., "deployment": ..., "features": true}],
"features": {"name": [edges...]}}. Every deployment serves the same steady stream:
`model_requests_total{namespace,deployment,code}` at `--rps` (no errors),
`model_request_duration_seconds` (a fixed latency distribution), and, where
"features" is true, `model_feature_value{feature}` histograms on the given edges with
each bucket holding its reference share (so the drift gate finds no drift). Values
are computed from the time since start at each scrape, so there is no simulation loop
to fall behind however many deployments there are. It stops after `--lifetime` s.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testbed.serving import serve_until

LATENCY_BUCKETS = ((0.05, 0.3), (0.1, 0.8), (0.2, 0.995), (0.5, 1.0), (1.0, 1.0))


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


class Series:
    """The exposition text, as fixed line prefixes and a few values that move."""

    def __init__(self, spec: dict[str, Any], rps: float, feature_rps: float) -> None:
        self.rps, self.feature_rps = rps, feature_rps
        self.start = time.time()
        edges: dict[str, list[float]] = spec.get("features", {})
        # feature buckets: equal shares between the edges (a reference built from
        # quantiles gives every bin the same mass)
        self.feature_les = {
            name: [(repr(float(e)), (i + 1) / (len(es) + 1)) for i, e in enumerate(es)]
            + [("+Inf", 1.0)]
            for name, es in edges.items()
        }
        requests: list[str] = []
        latency: list[tuple[str, float]] = []
        features: list[tuple[str, float]] = []
        for d in spec["deployments"]:
            base = _labels(namespace=d["namespace"], deployment=d["deployment"])
            requests.append(base)
            for le, share in [*((repr(b), s) for b, s in LATENCY_BUCKETS), ("+Inf", 1.0)]:
                latency.append(
                    (f'model_request_duration_seconds_bucket{{{base},le="{le}"}} ', share)
                )
            if d.get("features"):
                for name, les in self.feature_les.items():
                    for le, share in les:
                        line = f'model_feature_value_bucket{{{base},feature="{name}",le="{le}"}} '
                        features.append((line, share))
        self.requests, self.latency, self.features = requests, latency, features

    def render(self) -> bytes:
        elapsed = time.time() - self.start
        total = self.rps * elapsed
        seen = self.feature_rps * elapsed
        out = ["# TYPE model_requests_total counter\n"]
        ok, errors = f"{total:.3f}\n", "0\n"
        for base in self.requests:
            out.append(f'model_requests_total{{{base},code="200"}} {ok}')
            out.append(f'model_requests_total{{{base},code="500"}} {errors}')
        out.append("# TYPE model_request_duration_seconds histogram\n")
        out.extend(f"{line}{total * share:.3f}\n" for line, share in self.latency)
        if self.features:
            out.append("# TYPE model_feature_value histogram\n")
            out.extend(f"{line}{seen * share:.3f}\n" for line, share in self.features)
        return "".join(out).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--series", type=Path, required=True)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--feature-rps", type=float, default=20.0)
    parser.add_argument("--lifetime", type=float, default=3600)
    args = parser.parse_args()
    series = Series(json.loads(args.series.read_text()), args.rps, args.feature_rps)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = series.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    serve_until(server, args.lifetime)


if __name__ == "__main__":
    main()
