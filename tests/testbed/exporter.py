"""`python -m testbed.exporter --port P`: a stand-in model server's metrics.

It simulates its own request stream (so rates and histograms move as Prometheus
scrapes them) and takes its behaviour from `POST /config` with JSON such as
{"error_rate": 0.2, "latency": 0.15, "values": {"nan": "NaN"}}:

- `model_requests_total{code}` and `model_request_duration_seconds` (histogram)
  from `rps` requests a second, `error_rate` of them 500s, latencies around `latency`;
- `model_latency_seconds`: the current mean latency with a little noise, for
  comparisons of range queries;
- `test_value{kind}`: gauges set verbatim, for NaN, Inf and multi-series results;
- with `--reference`, `model_feature_value{feature}` histograms on the reference's
  edges: `feature_rps` draws a second from normal distributions whose `mean` and
  `sd` per feature come from `features` ({"amount": {"mean": 1.0}}), and `feed`
  ({"amount": [..]}) observes exact values once.

The loop is bounded: it stops by itself after `--lifetime` seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from modelrollout.reference import parse_reference
from testbed.features import FeatureHistograms
from testbed.serving import serve_until

REGISTRY = CollectorRegistry()
REQUESTS = Counter("model_requests", "Requests served", ["code"], registry=REGISTRY)
DURATION = Histogram(
    "model_request_duration_seconds",
    "Request latency",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0),
    registry=REGISTRY,
)
LATENCY = Gauge("model_latency_seconds", "Mean latency now", registry=REGISTRY)
VALUES = Gauge("test_value", "Values set by the test", ["kind"], registry=REGISTRY)

config: dict[str, Any] = {
    "rps": 50.0,
    "error_rate": 0.0,
    "latency": 0.1,
    "noise": 0.03,
    "feature_rps": 0.0,
    "features": {},
}
lock = threading.Lock()
features: FeatureHistograms | None = None


def draw_features(rng: np.random.Generator, count: int) -> None:
    if features is None or count == 0:
        return
    with lock:
        shapes = {name: dict(config["features"].get(name, {})) for name in features.edges}
    features.observe(
        {
            name: rng.normal(shape.get("mean", 0.0), shape.get("sd", 1.0), count)
            for name, shape in shapes.items()
        }
    )


def simulate(lifetime: float, rng: random.Random, seed: int) -> None:
    deadline = time.monotonic() + lifetime
    draws = np.random.default_rng(seed)
    owed = 0.0
    while time.monotonic() < deadline:
        with lock:
            rps, errors, latency = config["rps"], config["error_rate"], config["latency"]
            noise = config["noise"]
            owed += config["feature_rps"] / 10
        draw_features(draws, int(owed))
        owed -= int(owed)
        for _ in range(max(1, round(rps / 10))):
            REQUESTS.labels("500" if rng.random() < errors else "200").inc()
            DURATION.observe(max(0.001, rng.gauss(latency, latency * noise)))
        LATENCY.set(max(0.0, rng.gauss(latency, latency * noise)))
        time.sleep(0.1)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = generate_latest(REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        update = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        feed = update.pop("feed", None)
        if feed and features is not None:
            features.observe(feed)
        with lock:
            for kind, value in update.pop("values", {}).items():
                VALUES.labels(kind).set(float(value))
            config.update(update)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lifetime", type=float, default=900)
    parser.add_argument("--reference", type=Path, help="drift reference YAML")
    parser.add_argument("--feature-rps", type=float, default=0.0)
    args = parser.parse_args()
    config["feature_rps"] = args.feature_rps
    if args.reference is not None:
        global features
        features = FeatureHistograms(
            "model_feature_value", parse_reference(args.reference.read_text())
        )
        REGISTRY.register(features)
    for code in ("200", "500"):
        REQUESTS.labels(code)  # both series exist from the first scrape
    threading.Thread(
        target=simulate, args=(args.lifetime, random.Random(args.seed), args.seed), daemon=True
    ).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    serve_until(server, args.lifetime)


if __name__ == "__main__":
    main()
