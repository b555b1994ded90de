"""Observe the drift gate for one tick: the reference, the candidate's histograms
from Prometheus, and the pure core's verdict.

The stable reference reads the stable's histograms over the same window, so both
sides saw the same hours of the same traffic mix. At a 100% stage the stable serves
nothing, so there is nothing to compare with: the gate is not re-checked there and
status keeps the previous stage's verdict.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelrollout.api.spec import DriftGate, ModelRolloutSpec
from modelrollout.api.status import DriftStatus
from modelrollout.core.drift import Bins, BinsMismatch, FeatureObservation, judge
from modelrollout.core.machine import Judgement
from modelrollout.core.slo import QueryFailed, QueryRejected
from modelrollout.kube.client import Kube, is_not_found
from modelrollout.metrics import histograms
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.metrics.template import render
from modelrollout.reference import Distribution, Reference, ReferenceProblem, parse_reference


class ReferenceMissing(Exception):
    """The reference ConfigMap does not exist (yet)."""


@dataclass(frozen=True)
class DriftObservation:
    """What the gate adds to a tick: its status (None when not checked) and verdict."""

    status: DriftStatus | None
    judgement: Judgement | None


class ReferenceCache:
    """Parsed references by ConfigMap and resourceVersion: read every tick, parsed once."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._parsed: dict[tuple[str, str, str], Reference] = {}

    async def get(self, namespace: str, gate: DriftGate) -> Reference | None:
        """The configMapRef reference (None for the stable reference). Raises
        ReferenceMissing or ReferenceProblem naming the key and the problem."""
        ref = gate.reference.config_map_ref
        if ref is None:
            return None
        try:
            config_map: Any = await self.kube.call(
                self.kube.core.read_namespaced_config_map, ref.name, namespace
            )
        except Exception as error:
            if is_not_found(error):
                raise ReferenceMissing(f"ConfigMap {ref.name} not found") from error
            raise
        key = (namespace, ref.name, str(config_map.metadata.resource_version))
        if key not in self._parsed:
            text = (config_map.data or {}).get(ref.key)
            if text is None:
                raise ReferenceProblem(f"ConfigMap {ref.name} has no key {ref.key}")
            reference = parse_reference(text, f"{ref.name}/{ref.key}")
            _covers(reference, gate, f"ConfigMap {ref.name} key {ref.key}")
            self._parsed = {k: v for k, v in self._parsed.items() if k[:2] != key[:2]}
            self._parsed[key] = reference
        return self._parsed[key]


def _covers(reference: Reference, gate: DriftGate, where: str) -> None:
    numeric = list(gate.features)
    categorical = list(gate.categorical.features) if gate.categorical else []
    for name in numeric + categorical:
        found = reference.feature(name)
        if found is None:
            raise ReferenceProblem(f"{where}: no feature {name}")
        if (found.edges is None) == (name in numeric):
            kind = "numeric" if name in numeric else "categorical"
            raise ReferenceProblem(f"{where}: feature {name} is {kind} in the gate, not there")
    if gate.score_histogram and reference.score is None:
        raise ReferenceProblem(f"{where}: no score distribution for {gate.score_histogram}")


def queries(gate: DriftGate, variables: dict[str, str], side: str, window: str) -> dict[str, str]:
    """The gate's queries for one side ("candidate" or "stable"); raises on a bad
    selector template."""
    target = {"target.deployment": variables[f"{side}.deployment"]}
    selector = render(gate.selector, variables | target)
    rendered = {
        "features": histograms.feature_buckets_query(gate, selector, window),
        "scrapes": histograms.scrapes_query(gate, selector, window),
    }
    if gate.score_histogram:
        rendered["score"] = histograms.score_buckets_query(gate.score_histogram, selector, window)
    if gate.categorical:
        rendered["categories"] = histograms.categories_query(gate, selector, window)
    return rendered


async def observe(
    spec: ModelRolloutSpec,
    namespace: str,
    stage: int,
    previous: DriftStatus | None,
    variables: dict[str, str],
    window: str,
    source: PrometheusSource,
    references: ReferenceCache,
    now: datetime,
) -> DriftObservation:
    gate = spec.drift_gate
    assert gate is not None
    side_by_side = gate.reference.stable is not None
    if side_by_side and spec.strategy.resolved_stages()[stage - 1].weight >= 100:
        return DriftObservation(None, None)
    try:
        reference = await references.get(namespace, gate)
    except ReferenceMissing as error:
        return DriftObservation(None, Judgement("pause", "ReferenceNotFound", str(error)))
    except ReferenceProblem as error:
        return DriftObservation(None, Judgement("invalid", "InvalidReference", str(error)))
    sides = ["candidate", "stable"] if side_by_side else ["candidate"]
    asked = {side: queries(gate, variables, side, window) for side in sides}
    flat = [(side, what, q) for side, qs in asked.items() for what, q in qs.items()]
    answers = await asyncio.gather(*(source.vector(q) for _, _, q in flat))
    seen: dict[str, dict[str, histograms.Series]] = {side: {} for side in sides}
    for (side, what, _), answer in zip(flat, answers, strict=True):
        if isinstance(answer, QueryRejected):
            message = f"Prometheus refused the drift gate's {what} query: {answer.message}"
            return DriftObservation(None, Judgement("invalid", "InvalidQuery", message))
        if isinstance(answer, QueryFailed):
            message = f"drift gate: {answer.message}"
            return DriftObservation(None, Judgement("pause", "AnalysisUnavailable", message))
        assert isinstance(answer, list)
        seen[side][what] = answer
    observed = {side: histograms.observed_fraction(seen[side]["scrapes"]) for side in sides}
    try:
        candidate = _bins(gate, seen["candidate"])
        if reference is None:
            stable = _bins(gate, seen["stable"])
            observations = [
                FeatureObservation(
                    name,
                    bins,
                    stable[name],
                    _observed(stable[name], observed["stable"]),
                    _observed(bins, observed["candidate"]),
                )
                for name, bins in candidate.items()
            ]
        else:
            observations = [
                FeatureObservation(
                    name,
                    bins,
                    *_from_reference(reference, gate, name),
                    _observed(bins, observed["candidate"]),
                )
                for name, bins in candidate.items()
            ]
    except BinsMismatch as error:
        return DriftObservation(None, Judgement("invalid", "DriftBinsMismatch", str(error)))
    outcome = judge(gate, observations, now, stage, previous)
    return DriftObservation(outcome.status, outcome.judgement)


def _observed(bins: Bins | None, fraction: float) -> float | None:
    return bins.total * fraction if bins is not None else None


def _bins(gate: DriftGate, answers: dict[str, histograms.Series]) -> dict[str, Bins | None]:
    bins = histograms.feature_bins(answers["features"], gate.features)
    if gate.categorical:
        categorical = gate.categorical
        bins |= histograms.category_bins(
            answers["categories"], categorical.features, categorical.category_label
        )
    if gate.score_histogram:
        bins[gate.score_histogram] = histograms.score_bins(answers["score"], gate.score_histogram)
    return bins


def _from_reference(reference: Reference, gate: DriftGate, name: str) -> tuple[Bins | None, float]:
    found: Distribution | None = (
        reference.score if name == gate.score_histogram else reference.feature(name)
    )
    if found is None:
        return None, float(reference.samples)
    keys = found.edges if found.edges is not None else found.categories
    assert keys is not None
    return Bins(keys, found.proportions, numeric=found.edges is not None), float(reference.samples)
