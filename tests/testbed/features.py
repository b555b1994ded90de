"""Per-feature histograms with a reference's bucket edges, for the drift gate.

prometheus_client gives every label value of one histogram the same buckets, but
each feature has its own quantile edges, so this is a small custom collector. Every
feature's series exist at zero from the start, so `increase()` misses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from modelrollout.reference import Reference


class FeatureHistograms(Collector):
    """`<name>{feature}` with the reference's edges, counted with `le` semantics."""

    def __init__(self, name: str, reference: Reference) -> None:
        self.name = name
        self.edges = {f.name: np.array(f.edges) for f in reference.features if f.edges}
        self.counts = {f: np.zeros(len(e) + 1) for f, e in self.edges.items()}
        self.sums = dict.fromkeys(self.edges, 0.0)
        self._lock = threading.Lock()

    def observe(self, rows: Mapping[str, Iterable[float]]) -> None:
        with self._lock:
            for feature, values in rows.items():
                array = np.asarray(list(values), dtype=np.float64)
                bins = np.searchsorted(self.edges[feature], array, side="left")
                self.counts[feature] += np.bincount(bins, minlength=len(self.counts[feature]))
                self.sums[feature] += float(array.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, "Model input values", labels=["feature"])
        with self._lock:
            for feature, edges in self.edges.items():
                cumulative = np.cumsum(self.counts[feature])
                buckets = [
                    (floatToGoString(le), float(c))
                    for le, c in zip([*edges, float("inf")], cumulative, strict=True)
                ]
                family.add_metric([feature], buckets, self.sums[feature])
        yield family
