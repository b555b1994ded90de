"""`python category_server.py PORT CATEGORIES SCORE_EDGES SCORES`: a stand-in model
server's category counter and score histogram, for `reference capture`'s test.

Every series exists at zero until Prometheus has scraped it twice, so `increase()`
sees what comes after: then the counter gains the CATEGORIES' counts (a JSON object,
feature "country") and the histogram observes the SCORES (a JSON list). It stops by
itself.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LIFETIME = 120
ZERO_SCRAPES = 2


class Scrapes(Collector):
    """Counts the scrapes; exports nothing."""

    def __init__(self) -> None:
        self.seen = threading.Semaphore(0)

    def collect(self) -> Iterator[Metric]:
        self.seen.release()
        return iter(())


def main() -> None:
    port = int(sys.argv[1])
    categories, edges, scores = (json.loads(a) for a in sys.argv[2:5])
    registry = CollectorRegistry()
    counter = Counter(
        "model_feature_category", "Categories seen", ["feature", "category"], registry=registry
    )
    histogram = Histogram("model_score", "Scores", buckets=edges, registry=registry)
    for category in categories:
        counter.labels("country", category)
    scrapes = Scrapes()
    registry.register(scrapes)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    deadline = time.monotonic() + LIFETIME
    for _ in range(ZERO_SCRAPES):
        scrapes.seen.acquire(timeout=max(0.0, deadline - time.monotonic()))
    for category, count in categories.items():
        counter.labels("country", category).inc(count)
    for value in scores:
        histogram.observe(value)
    time.sleep(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    main()
