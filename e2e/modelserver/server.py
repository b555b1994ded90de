"""A small model server for end-to-end tests, the demo and kind users.

`python server.py --version v1 --port 8080 [--reference PATH]` serves a logistic
regression with fixed weights (v1 or v2) over four numeric features and one optional
categorical one, and exports the metrics the operator's gates read:

- `model_requests_total{code}`, `model_request_duration_seconds` (histogram);
- `model_prediction_score` (histogram; buckets from the reference's `score`, else deciles);
- `model_feature_value{feature}` (histogram; each feature with its own `le` buckets, the
  reference's edges, else built-in ones);
- `model_feature_category_total{feature,category}`;
- `model_info{version}` (always 1).

Endpoints: `POST /predict`, `GET /metrics`, `GET /healthz`, `GET|POST /admin/faults`.
Faults (error rate, added latency, feature shift, disagreement) come from flags, MODEL_*
environment variables or, at runtime, `POST /admin/faults`. See README.md next to this file.

Needs only numpy, prometheus_client and PyYAML. When the operator package `modelrollout`
is importable its reference parser is used; otherwise an equivalent standalone reader.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# --- the model ---------------------------------------------------------------------------

# The numeric features and their training distribution (normal, mean and standard
# deviation). The model standardises with these; `featureShift` counts in these stds;
# the built-in bucket edges are the deciles of these normals.
FEATURES: dict[str, tuple[float, float]] = {
    "amount": (100.0, 40.0),  # transaction amount
    "age": (40.0, 12.0),  # customer age, years
    "tenure": (6.0, 3.0),  # years as a customer
    "balance": (1000.0, 400.0),  # account balance
}
CATEGORICAL = "country"  # optional; unknown values count (and score) as OTHER
COUNTRIES = ("US", "DE", "FR", "IN", "BR")
OTHER = "other"


@dataclass(frozen=True)
class Weights:
    bias: float
    numeric: dict[str, float]  # on the standardised value (x - mean) / std
    country: dict[str, float]  # a missing or unknown country adds 0


MODELS = {
    "v1": Weights(
        bias=-0.30,
        numeric={"amount": 0.80, "age": -0.35, "tenure": -0.50, "balance": 0.25},
        country={"DE": 0.15, "FR": 0.10, "IN": -0.20, "BR": 0.25},
    ),
    "v2": Weights(
        bias=-0.28,
        numeric={"amount": 0.85, "age": -0.30, "tenure": -0.55, "balance": 0.20},
        country={"DE": 0.20, "FR": 0.05, "IN": -0.15, "BR": 0.30},
    ),
}

NAMES = tuple(FEATURES)
MEANS = np.array([FEATURES[n][0] for n in NAMES])
STDS = np.array([FEATURES[n][1] for n in NAMES])
DECILES = tuple(round(0.1 * i, 1) for i in range(1, 10))
DEFAULT_EDGES = {
    name: tuple(round(NormalDist(mean, std).inv_cdf(q), 3) for q in DECILES)
    for name, (mean, std) in FEATURES.items()
}


def score(weights: Weights, numeric: np.ndarray, countries: Sequence[str | None]) -> np.ndarray:
    """P(positive) for rows of numeric features (in NAMES order) and their countries."""
    coefficients = np.array([weights.numeric[n] for n in NAMES])
    logits = weights.bias + ((numeric - MEANS) / STDS) @ coefficients
    logits += np.array([weights.country.get(c or "", 0.0) for c in countries])
    with np.errstate(over="ignore"):  # extreme inputs: exp overflows, the score is 0
        result: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
    return result


# --- the reference ------------------------------------------------------------------------

FORMAT = "rollouts.mlops.io/drift-reference-v1"
CONFIG_MAP_KEY = "reference.yaml"


class BadReference(ValueError):
    """The reference file cannot be used."""


@dataclass(frozen=True)
class Buckets:
    """What the server instruments: numeric edges per feature, categories per feature,
    and the score's edges."""

    numeric: dict[str, tuple[float, ...]]
    categorical: dict[str, tuple[str, ...]]
    score: tuple[float, ...]
    source: str


def default_buckets() -> Buckets:
    return Buckets(dict(DEFAULT_EDGES), {CATEGORICAL: COUNTRIES}, DECILES, "built-in edges")


def load_reference(path: Path) -> Buckets:
    """Buckets from a reference YAML or a ConfigMap manifest holding one."""
    text = path.read_text()
    key = CONFIG_MAP_KEY
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadReference(f"not YAML: {error}") from error
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        entries = data.get("data")
        if isinstance(entries, dict) and CONFIG_MAP_KEY not in entries and len(entries) == 1:
            key = next(iter(entries))  # a ConfigMap holding a single file of another name
        if not isinstance(entries, dict) or not isinstance(entries.get(key), str):
            raise BadReference(f"the ConfigMap has no data key {CONFIG_MAP_KEY}")
        text = entries[key]
    try:
        from modelrollout.reference import ReferenceProblem, parse_reference
    except ImportError:
        reader = "standalone reader"
        features, score_dist = read_reference(text, key)
    else:
        reader = "modelrollout.reference"
        try:
            ref = parse_reference(text, key)
        except ReferenceProblem as error:
            raise BadReference(str(error)) from error
        features = [(d.name, d.edges, d.categories) for d in ref.features]
        s = ref.score
        score_dist = None if s is None else (s.name, s.edges, s.categories)
    return _buckets(features, score_dist, f"{path} ({reader})")


Dist = tuple[str, Sequence[float] | None, Sequence[str] | None]


def _buckets(features: Sequence[Dist], score_dist: Dist | None, source: str) -> Buckets:
    result = default_buckets()
    numeric, categorical = dict(result.numeric), dict(result.categorical)
    for name, edges, categories in features:
        if edges is not None:
            if name == CATEGORICAL:
                raise BadReference(f"feature {name} is categorical in this model")
            numeric[name] = tuple(float(e) for e in edges)
        else:
            assert categories is not None
            if name in FEATURES:
                raise BadReference(f"feature {name} is numeric in this model")
            categorical[name] = tuple(categories)
    score_edges = result.score
    if score_dist is not None:
        if score_dist[1] is None:
            raise BadReference("score needs edges, not categories")
        score_edges = tuple(float(e) for e in score_dist[1])
    return Buckets(numeric, categorical, score_edges, source)


def read_reference(text: str, key: str = CONFIG_MAP_KEY) -> tuple[list[Dist], Dist | None]:
    """The standalone reader: the checks of `modelrollout.reference`, without pydantic."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BadReference(f"key {key}: not YAML: {error}") from error
    if not isinstance(data, dict):
        raise BadReference(f"key {key}: expected a mapping, got {type(data).__name__}")
    if data.get("format", FORMAT) != FORMAT:
        raise BadReference(f"key {key}: format must be {FORMAT}")
    extra = set(data) - {"format", "samples", "features", "score"}
    if extra:
        raise BadReference(f"key {key}: unexpected keys {sorted(extra)}")
    samples = data.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise BadReference(f"key {key}: samples must be an integer >= 1")
    features = data.get("features")
    if not isinstance(features, list) or not features:
        raise BadReference(f"key {key}: features must be a non-empty list")
    dists = [_distribution(f, f"key {key}: features.{i}") for i, f in enumerate(features)]
    names = [d[0] for d in dists]
    if len(set(names)) != len(names):
        raise BadReference(f"key {key}: feature names must be unique")
    score_data = data.get("score")
    score_dist = None if score_data is None else _distribution(score_data, f"key {key}: score")
    return dists, score_dist


def _distribution(data: Any, where: str) -> Dist:
    def problem(message: str) -> BadReference:
        return BadReference(f"{where}: {message}")

    if not isinstance(data, dict):
        raise problem("expected a mapping")
    extra = set(data) - {"name", "edges", "categories", "proportions"}
    if extra:
        raise problem(f"unexpected keys {sorted(extra)}")
    name, edges, categories = data.get("name"), data.get("edges"), data.get("categories")
    if not isinstance(name, str) or not name:
        raise problem("name must be a non-empty string")
    if (edges is None) == (categories is None):
        raise problem("needs exactly one of edges (numeric) or categories")
    if edges is not None:
        if not isinstance(edges, list):
            raise problem("edges must be a list of numbers")
        edges = [_finite(e) for e in edges]
        if None in edges:
            raise problem("edges must be finite numbers; the last bin is open above")
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise problem("edges must be strictly increasing")
        bins = len(edges) + 1
    else:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise problem("categories must be a list of strings")
        if len(set(categories)) != len(categories):
            raise problem("categories must be unique")
        bins = len(categories)
    if bins < 2:
        raise problem("needs at least two bins")
    proportions = data.get("proportions")
    if not isinstance(proportions, list):
        raise problem("proportions must be a list of numbers")
    proportions = [_finite(p) for p in proportions]
    if len(proportions) != bins:
        raise problem(f"has {len(proportions)} proportions for {bins} bins")
    if any(p is None or p < 0 for p in proportions):
        raise problem("proportions must be finite and non-negative")
    if abs(sum(proportions) - 1) > 1e-6:
        raise problem(f"proportions sum to {sum(proportions):.9g}, not 1")
    return name, edges, categories


def _finite(value: Any) -> float | None:
    """`value` as a float if it is a finite JSON/YAML number (not a bool), else None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


# --- metrics ------------------------------------------------------------------------------


class FeatureHistograms(Collector):
    """One histogram family, labelled by feature, each feature with its own `le` edges.

    prometheus_client's Histogram shares one set of buckets across label values, so this
    counts by hand: a value v goes into the first bin whose edge is >= v (`le`), and the
    exported buckets are cumulative. Edges are written with floatToGoString, which
    round-trips the float exactly.
    """

    def __init__(self, name: str, documentation: str, edges: Mapping[str, Sequence[float]]):
        self._name, self._doc = name, documentation
        self._edges = {feature: tuple(e) for feature, e in edges.items()}
        self._les = {f: [floatToGoString(e) for e in es] for f, es in self._edges.items()}
        self._counts = {feature: [0] * (len(e) + 1) for feature, e in self._edges.items()}
        self._sums = dict.fromkeys(self._edges, 0.0)
        self._lock = threading.Lock()

    def observe(self, feature: str, value: float) -> None:
        index = bisect.bisect_left(self._edges[feature], value)
        with self._lock:
            self._counts[feature][index] += 1
            self._sums[feature] += value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = {f: list(c) for f, c in self._counts.items()}
            sums = dict(self._sums)
        family = HistogramMetricFamily(self._name, self._doc, labels=["feature"])
        for feature, les in self._les.items():
            cumulative = list(itertools.accumulate(counts[feature]))
            buckets = [*zip(les, cumulative, strict=False), ("+Inf", cumulative[-1])]
            family.add_metric([feature], buckets, sums[feature])
        yield family


class Metrics:
    def __init__(self, version: str, buckets: Buckets) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("model_requests", "Predict requests by code.", ["code"], registry=r)
        self.duration = Histogram(
            "model_request_duration_seconds", "Predict request latency.", registry=r
        )
        self.score = Histogram(
            "model_prediction_score", "Prediction scores.", buckets=buckets.score, registry=r
        )
        self.features = FeatureHistograms(
            "model_feature_value", "Numeric input feature values.", buckets.numeric
        )
        r.register(self.features)
        self.categories = Counter(
            "model_feature_category",
            "Categorical input feature values.",
            ["feature", "category"],
            registry=r,
        )
        Gauge("model_info", "The model version served.", ["version"], registry=r).labels(
            version
        ).set(1)
        for code in ("200", "400", "500"):
            self.requests.labels(code)  # the series exist from the first scrape
        for feature, categories in buckets.categorical.items():
            for category in (*categories, OTHER):
                self.categories.labels(feature, category)


# --- faults -------------------------------------------------------------------------------

MAX_LATENCY = 60.0
MAX_SHIFT = 1e6


class BadRequest(ValueError):
    """A 400, with its message."""


class PayloadTooLarge(ValueError):
    """A 413."""


FAULT_KEYS = ("errorRate", "addedLatency", "featureShift", "disagree")


@dataclass
class Faults:
    error_rate: float = 0.0
    added_latency: float = 0.0
    feature_shift: dict[str, float] = field(default_factory=dict)
    disagree: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "errorRate": self.error_rate,
            "addedLatency": self.added_latency,
            "featureShift": dict(self.feature_shift),
            "disagree": self.disagree,
        }

    def updated(self, change: Any, numeric: Sequence[str]) -> Faults:
        """A copy with the keys of `change` (the JSON of POST /admin/faults) applied."""
        if not isinstance(change, dict):
            raise BadRequest(f"expected a JSON object with {', '.join(FAULT_KEYS)}")
        unknown = set(change) - set(FAULT_KEYS)
        if unknown:
            raise BadRequest(f"unknown keys {sorted(unknown)}")
        new = Faults(self.error_rate, self.added_latency, dict(self.feature_shift), self.disagree)
        if "errorRate" in change:
            new.error_rate = _bounded(change["errorRate"], "errorRate", 0.0, 1.0)
        if "addedLatency" in change:
            new.added_latency = _bounded(change["addedLatency"], "addedLatency", 0, MAX_LATENCY)
        if "disagree" in change:
            new.disagree = _bounded(change["disagree"], "disagree", 0.0, 1.0)
        if "featureShift" in change:
            shift = change["featureShift"]
            if not isinstance(shift, dict):
                raise BadRequest('featureShift must be an object like {"amount": 1.0}')
            strangers = [name for name in shift if name not in numeric]
            if strangers:
                raise BadRequest(f"featureShift: {strangers} not among {sorted(numeric)}")
            new.feature_shift = {
                name: number
                for name, value in shift.items()
                if (number := _bounded(value, f"featureShift.{name}", -MAX_SHIFT, MAX_SHIFT))
            }
        return new


def _bounded(value: Any, what: str, low: float, high: float) -> float:
    number = _finite(value)
    if number is None or not low <= number <= high:
        raise BadRequest(f"{what} must be a number in [{low:g}, {high:g}], got {value!r}")
    return number


def parse_shift(text: str) -> dict[str, Any]:
    """`amount=1.5,age=-0.5` or a JSON object, as in MODEL_FEATURE_SHIFT."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    shift: dict[str, Any] = {}
    for part in text.split(","):
        name, sep, number = part.partition("=")
        if not sep:
            raise ValueError(f"expected name=value, got {part!r}")
        shift[name.strip()] = float(number)
    return shift


# --- serving ------------------------------------------------------------------------------


def _json_loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # also bad UTF-8, huge ints, deep nesting
        raise BadRequest(f"body is not JSON: {error}") from error


MAX_BODY = 1 << 20
MAX_INSTANCES = 1000


@dataclass
class Row:
    numeric: dict[str, float]  # the model's features and any other numeric reference feature
    categorical: dict[str, str]


class Model:
    """The scorer, its metrics and its faults; shared by the handler threads."""

    def __init__(self, version: str, buckets: Buckets, faults: Faults, seed: int | None):
        self.version, self.weights, self.buckets = version, MODELS[version], buckets
        self.metrics = Metrics(version, buckets)
        self.faults = faults
        self._rng = random.Random(seed)
        # Dice of their own, so turning disagreement on leaves the error sequence as it was.
        self._disagree_rng = random.Random(None if seed is None else f"disagree/{seed}")
        self._lock = threading.Lock()

    @property
    def numeric(self) -> list[str]:
        return list(self.buckets.numeric)

    def set_faults(self, change: Any) -> Faults:
        with self._lock:
            self.faults = self.faults.updated(change, self.numeric)
            return self.faults

    def predict(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer for a /predict body; updates the metrics except the
        request counter and duration, which the handler records."""
        rows, single = self._parse(body)
        with self._lock:
            faults = self.faults
            fail = self._rng.random() < faults.error_rate
            disagree = bool(faults.disagree) and self._disagree_rng.random() < faults.disagree
        if faults.added_latency:
            time.sleep(faults.added_latency)
        if fail:
            return 500, {"error": "injected fault (errorRate)", "version": self.version}
        for row in rows:
            for name, shift in faults.feature_shift.items():
                if name in row.numeric:
                    std = FEATURES[name][1] if name in FEATURES else 1.0
                    row.numeric[name] += shift * std
            for name, value in row.numeric.items():
                self.metrics.features.observe(name, value)
            for name, category in row.categorical.items():
                known = self.buckets.categorical[name]
                self.metrics.categories.labels(name, category if category in known else OTHER).inc()
        numeric = np.array([[row.numeric[n] for n in NAMES] for row in rows], dtype=np.float64)
        scores = score(self.weights, numeric, [row.categorical.get(CATEGORICAL) for row in rows])
        if disagree:  # every score of this answer 0.5 away, around the unit interval
            scores = (scores + 0.5) % 1.0
        for s in scores:
            self.metrics.score.observe(float(s))
        if single:
            return 200, {"score": float(scores[0]), "version": self.version}
        return 200, {"scores": [float(s) for s in scores], "version": self.version}

    def _parse(self, body: bytes) -> tuple[list[Row], bool]:
        data = _json_loads(body)
        usage = 'expected {"features": {...}} or {"instances": [{...}, ...]}'
        if not isinstance(data, dict) or ("features" in data) == ("instances" in data):
            raise BadRequest(usage)
        if "features" in data:
            return [self._row(data["features"], "features")], True
        instances = data["instances"]
        if not isinstance(instances, list) or not 1 <= len(instances) <= MAX_INSTANCES:
            raise BadRequest(f"instances must be a list of 1 to {MAX_INSTANCES} objects")
        return [self._row(x, f"instances[{i}]") for i, x in enumerate(instances)], False

    def _row(self, features: Any, where: str) -> Row:
        if not isinstance(features, dict):
            raise BadRequest(f"{where} must be an object of feature values")
        missing = [n for n in NAMES if n not in features]
        if missing:
            raise BadRequest(f"{where}: missing feature(s) {', '.join(missing)}")
        numeric: dict[str, float] = {}
        for name in self.buckets.numeric:
            if name in features:
                value = _finite(features[name])
                if value is None:
                    raise BadRequest(
                        f"{where}: {name} must be a finite number, got {features[name]!r}"
                    )
                numeric[name] = value
        categorical: dict[str, str] = {}
        for name in self.buckets.categorical:
            value = features.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise BadRequest(f"{where}: {name} must be a string, got {value!r}")
                categorical[name] = value
        return Row(numeric, categorical)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait
    # for the client's delayed ACK of the headers (40 ms on Linux) with clients that
    # send their request in two segments, as aiohttp's does. Serving stacks set this too.
    disable_nagle_algorithm = True
    server_version = "modelserver/1"
    sys_version = ""
    model: Model  # set on a subclass by serve()
    access_log = False

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.model.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/admin/faults":
            self._json(200, self.model.faults.to_json())
        else:
            self._json(404, {"error": f"no such path {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/predict":
            self._predict()
        elif path == "/admin/faults":
            try:
                faults = self.model.set_faults(self._json_body())
            except BadRequest as error:
                self._json(400, {"error": str(error)})
            else:
                log(f"faults now {json.dumps(faults.to_json())}")
                self._json(200, faults.to_json())
        else:
            self._json(404, {"error": f"no such path {path}"})

    def _predict(self) -> None:
        start = time.perf_counter()
        try:
            status, answer = self.model.predict(self._body())
        except BadRequest as error:
            status, answer = 400, {"error": str(error)}
        except PayloadTooLarge as error:
            status, answer = 413, {"error": str(error)}
        except Exception as error:  # a bug: still answer, and count it
            status, answer = 500, {"error": f"internal error: {error!r}"}
        metrics = self.model.metrics
        metrics.duration.observe(time.perf_counter() - start)
        metrics.requests.labels(str(status)).inc()  # before answering: a scrape after sees it
        self._json(status, answer)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest("chunked bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError as error:
            self.close_connection = True
            raise BadRequest("bad Content-Length") from error
        if length > MAX_BODY:
            self.close_connection = True
            raise PayloadTooLarge(f"body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _json_body(self) -> Any:
        try:
            return _json_loads(self._body())
        except PayloadTooLarge as error:
            raise BadRequest(str(error)) from error

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.access_log:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog; socketserver's 5 refuses bursts


def log(message: str) -> None:
    print(f"modelserver: {message}", file=sys.stderr, flush=True)


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", choices=sorted(MODELS), default="v1", help="default: v1")
    parser.add_argument("--host", default="0.0.0.0", help="default: 0.0.0.0")
    parser.add_argument("--port", type=int, default=8080, help="default: 8080")
    parser.add_argument(
        "--reference",
        type=Path,
        help="drift reference (bare YAML or ConfigMap manifest) giving the bucket edges",
    )
    parser.add_argument("--seed", type=int, help="seed of the error-rate and disagree dice")
    parser.add_argument(
        "--error-rate",
        help="fraction of predictions answered 500 (default: $MODEL_ERROR_RATE, else 0)",
    )
    parser.add_argument(
        "--added-latency",
        help="seconds to sleep before answering a prediction (default: $MODEL_ADDED_LATENCY)",
    )
    parser.add_argument(
        "--feature-shift",
        help="e.g. amount=1.5,age=-1 or JSON: added to inputs, in stds for the model's "
        "features, absolute for other reference features (default: $MODEL_FEATURE_SHIFT)",
    )
    parser.add_argument(
        "--disagree",
        help="fraction of predictions whose scores move by 0.5 around [0, 1), so that a "
        "shadow comparison sees them differ (default: $MODEL_DISAGREE, else 0)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if args.reference is None:
        args.buckets = default_buckets()
    else:
        try:
            args.buckets = load_reference(args.reference)
        except (OSError, UnicodeDecodeError, BadReference) as error:
            parser.error(f"--reference {args.reference}: {error}")
    settings: dict[str, tuple[str, str, str | None, Callable[[str], Any]]] = {
        "errorRate": ("--error-rate", "MODEL_ERROR_RATE", args.error_rate, float),
        "addedLatency": ("--added-latency", "MODEL_ADDED_LATENCY", args.added_latency, float),
        "featureShift": ("--feature-shift", "MODEL_FEATURE_SHIFT", args.feature_shift, parse_shift),
        "disagree": ("--disagree", "MODEL_DISAGREE", args.disagree, float),
    }
    change: dict[str, Any] = {}
    for key, (flag, variable, given, convert) in settings.items():
        text = given if given is not None else os.environ.get(variable, "")
        try:
            if text.strip():
                change[key] = convert(text)
        except ValueError as error:
            parser.error(f"{flag if given is not None else variable}: {error}")
    try:
        args.faults = Faults().updated(change, list(args.buckets.numeric))
    except BadRequest as error:
        parser.error(f"faults: {error}")
    return args


def serve(args: argparse.Namespace) -> None:
    model = Model(args.version, args.buckets, args.faults, args.seed)
    handler = type("BoundHandler", (Handler,), {"model": model, "access_log": args.access_log})
    try:
        server = Server((args.host, args.port), handler)
    except OSError as error:
        log(f"cannot listen on {args.host}:{args.port}: {error}")
        sys.exit(1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    log(
        f"{args.version} listening on {args.host}:{server.server_address[1]}; "
        f"buckets from {args.buckets.source}; "
        f"faults {json.dumps(args.faults.to_json())}"
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    thread.join()
    log("stopped")


def main(argv: Sequence[str] | None = None) -> None:
    disable_created_metrics()  # no *_created series: Prometheus ignores them by default
    serve(arguments(argv))


if __name__ == "__main__":
    main()
