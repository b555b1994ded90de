"""`modelrollout reference capture`: what the stable model serves now, as a reference.

It reads the stable's feature histograms from Prometheus over a window with the drift
gate's own queries (metrics.histograms), so the reference has exactly the bins the
gate will compare the candidate with, and writes the ConfigMap `reference build`
writes. Counts come from `increase()` over the window; as the gate does, the sample
count is deflated by the share of the window its scrapes observed.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from pydantic import ValidationError

from modelrollout.api.spec import DriftGate
from modelrollout.cli.bins import shares
from modelrollout.cli.table import DataProblem
from modelrollout.core.drift import Bins, BinsMismatch
from modelrollout.metrics import histograms
from modelrollout.metrics.template import UnknownVariable, UnsafeTemplate, render
from modelrollout.reference import Distribution, Reference

MAX_RESPONSE_BYTES = 32 << 20
Series = list[tuple[dict[str, str], float]]  # an instant vector: labels and value


@dataclass(frozen=True)
class Capture:
    prometheus: str  # base URL
    gate: DriftGate  # the histograms and features, as the gate that will read them
    selector: str  # label matchers picking the stable's series
    window: str  # a PromQL duration
    at: str | None = None  # the window's end (RFC 3339 or Unix seconds); None: now
    timeout: float = 30.0


def drift_gate(args: argparse.Namespace) -> DriftGate:
    """The gate that will read this reference, from `reference capture`'s options."""
    gate: dict[str, Any] = {
        "histogram": args.histogram,
        "features": list(args.features),
        "scoreHistogram": args.score_histogram,
        "reference": {"configMapRef": {"name": args.name, "key": args.key}},
    }
    if args.categorical or args.categorical_counter:
        gate["categorical"] = {
            "counter": args.categorical_counter,
            "features": list(args.categorical),
            "categoryLabel": args.category_label,
        }
    try:
        return DriftGate.model_validate(gate)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise DataProblem(f"these options make no drift gate: {problems}") from None


def selector(args: argparse.Namespace) -> str:
    """The selector with {{namespace}} and {{target.deployment}} filled in, escaped; one
    that --namespace or --deployment did not give is an unknown variable."""
    given = {"namespace": args.namespace, "target.deployment": args.deployment}
    variables = {name: value for name, value in given.items() if value}
    try:
        return render(args.selector, variables)
    except (UnknownVariable, UnsafeTemplate) as error:
        raise DataProblem(f"--selector: {error}") from None


def capture(request: Capture) -> Reference:
    gate, selector, window = request.gate, request.selector, request.window
    asked = {
        "features": histograms.feature_buckets_query(gate, selector, window),
        "scrapes": histograms.scrapes_query(gate, selector, window),
    }
    if gate.categorical:
        asked["categories"] = histograms.categories_query(gate, selector, window)
    if gate.score_histogram:
        asked["score"] = histograms.score_buckets_query(gate.score_histogram, selector, window)
    answers = {what: instant_vector(request, promql) for what, promql in asked.items()}
    where = f"with {selector} over {window}"
    try:
        found = histograms.feature_bins(answers["features"], gate.features)
        if gate.score_histogram:
            found[gate.score_histogram] = histograms.score_bins(
                answers["score"], gate.score_histogram
            )
        categorical = gate.categorical
        if categorical:
            found |= histograms.category_bins(
                answers["categories"], categorical.features, categorical.category_label
            )
    except BinsMismatch as error:
        raise DataProblem(f"{error} ({where})") from None
    missing = [name for name, bins in found.items() if bins is None or bins.total <= 0]
    if missing:
        raise DataProblem(f"no observations of {', '.join(missing)} {where}")
    distributions = {name: _distribution(name, bins) for name, bins in found.items() if bins}
    observed = histograms.observed_fraction(answers["scrapes"])
    samples = math.floor(min(b.total for b in found.values() if b) * observed)
    if samples < 1:
        raise DataProblem(f"fewer than two scrapes of {gate.histogram} {where}")
    score = distributions.pop(gate.score_histogram) if gate.score_histogram else None
    try:
        return Reference(samples=samples, features=tuple(distributions.values()), score=score)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise DataProblem(f"cannot make a reference: {problems}") from None


def _distribution(name: str, bins: Bins) -> Distribution:
    try:
        if bins.numeric:
            edges = tuple(float(e) for e in bins.keys)
            return Distribution(name=name, edges=edges, proportions=shares(bins.counts))
        seen = [(str(k), c) for k, c in zip(bins.keys, bins.counts, strict=True) if c > 0]
        ranked = sorted(seen, key=lambda item: (-item[1], item[0]))  # as `build` orders them
        return Distribution(
            name=name,
            categories=tuple(k for k, _ in ranked),
            proportions=shares([c for _, c in ranked]),
        )
    except ValidationError as error:
        problems = "; ".join(e["msg"] for e in error.errors())
        raise DataProblem(f"{name}: cannot make a reference: {problems}") from None


def instant_vector(request: Capture, promql: str) -> Series:
    """An instant query's vector, as (labels, value) pairs; DataProblem otherwise."""
    url = f"{request.prometheus.rstrip('/')}/api/v1/query"
    params = {"query": promql} | ({"time": request.at} if request.at else {})
    try:
        with requests.get(url, params=params, timeout=request.timeout, stream=True) as response:
            body = _json(response)
    except requests.RequestException as error:
        raise DataProblem(f"Prometheus at {request.prometheus}: {error}") from None
    if body.get("status") != "success":
        problem = body.get("error") or f"HTTP {response.status_code}"
        raise DataProblem(f"Prometheus refused {promql}: {problem}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise DataProblem(f"Prometheus answered {promql} with a {data.get('resultType')}")
    return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]


def _json(response: requests.Response) -> Mapping[str, Any]:
    """The body as JSON, read up to MAX_RESPONSE_BYTES."""
    body = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
    if len(body) > MAX_RESPONSE_BYTES:
        raise DataProblem(f"Prometheus answered more than {MAX_RESPONSE_BYTES >> 20} MB")
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        raise DataProblem(
            f"Prometheus answered HTTP {response.status_code} without JSON: {body[:80]!r}"
        ) from None
    if not isinstance(parsed, dict):
        raise DataProblem(f"Prometheus answered HTTP {response.status_code} with {parsed!r:.80}")
    return parsed
