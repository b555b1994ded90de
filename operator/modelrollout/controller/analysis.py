"""Observe the analysis for one tick: render the queries, ask Prometheus, compare
with the stable, and let the pure core judge.

Queries run only while a stage is being judged: never while the rollout waits for
approval or is paused, at most one instant query per metric per tick.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from base64 import b64decode
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modelrollout.api.durations import parse_duration
from modelrollout.api.spec import Metric, ModelRolloutSpec, SecretKeyRef
from modelrollout.api.status import DriftStatus, ModelRolloutStatus
from modelrollout.controller import drift
from modelrollout.controller.drift import ReferenceCache, ReferenceMissing
from modelrollout.core.compare import CompareResult, compare
from modelrollout.core.drift import combine
from modelrollout.core.machine import Judgement
from modelrollout.core.slo import AnalysisOutcome, QueryFailed, QueryRejected, Reading, evaluate
from modelrollout.kube.client import Kube
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.metrics.template import (
    UnknownVariable,
    UnsafeTemplate,
    render,
    variables_for,
    window_for,
)
from modelrollout.reference import ReferenceProblem

# Pauses that the analysis itself caused, and may lift when it sees again.
_ANALYSIS_PAUSES = frozenset({"AnalysisUnavailable", "NoDataPolicy", "ReferenceNotFound"})


class SecretProblem(Exception):
    """A referenced Secret or key is missing: the analysis cannot connect."""


@dataclass
class MetricsSources:
    """Prometheus sources shared by rollouts with the same connection settings.

    Secrets are read every tick, so a rotated token or CA applies at the next one. A
    source is kept per connection (its address, header names and Secret references,
    and the namespace when it reads Secrets); new credentials replace that
    connection's source, so rotations do not pile up sources. A replaced source is
    dropped, not closed: a query of another rollout may still be using it."""

    kube: Kube
    pool: Executor

    def __post_init__(self) -> None:
        self._sources: dict[tuple[Any, ...], tuple[tuple[Any, ...], PrometheusSource]] = {}
        self.references = ReferenceCache(self.kube)
        self._ca_dir = Path(tempfile.mkdtemp(prefix="modelrollout-ca-"))

    async def _secret(self, namespace: str, ref: SecretKeyRef) -> bytes:
        try:
            secret: Any = await self.kube.call(
                self.kube.core.read_namespaced_secret, ref.name, namespace
            )
        except Exception as error:
            raise SecretProblem(f"cannot read Secret {ref.name}: {error}") from error
        data = (secret.data or {}).get(ref.key)
        if data is None:
            raise SecretProblem(f"Secret {ref.name} has no key {ref.key}")
        return b64decode(data)

    async def source(self, spec: ModelRolloutSpec, namespace: str) -> PrometheusSource:
        assert spec.analysis is not None
        connection = spec.analysis.prometheus
        headers = dict(connection.headers or {})
        if connection.bearer_token_secret_ref is not None:
            token = await self._secret(namespace, connection.bearer_token_secret_ref)
            headers["Authorization"] = f"Bearer {token.decode().strip()}"
        ca_file = None
        if connection.ca_secret_ref is not None:
            ca = await self._secret(namespace, connection.ca_secret_ref)
            path = self._ca_dir / f"{hashlib.sha256(ca).hexdigest()[:16]}.pem"
            if not path.exists():
                path.write_bytes(ca)
            ca_file = str(path)
        token_ref, ca_ref = connection.bearer_token_secret_ref, connection.ca_secret_ref
        connection_key = (
            namespace if token_ref or ca_ref else None,
            connection.address,
            connection.timeout,
            tuple(sorted(connection.headers or {})),
            (token_ref.name, token_ref.key) if token_ref else None,
            (ca_ref.name, ca_ref.key) if ca_ref else None,
        )
        settings = (tuple(sorted(headers.items())), ca_file)
        known = self._sources.get(connection_key)
        if known is not None and known[0] == settings:
            return known[1]
        source = PrometheusSource(
            connection.address,
            headers=headers,
            timeout_seconds=parse_duration(connection.timeout).total_seconds(),
            pool=self.pool,
            ca_file=ca_file,
        )
        self._sources[connection_key] = (settings, source)
        return source

    @property
    def connections(self) -> int:
        return len(self._sources)

    def close(self) -> None:
        for _, source in self._sources.values():
            source.close()


def analysis_due(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    if spec.analysis is None or status.stage == 0 or spec.paused or status.manual_pause:
        return False
    if status.phase == "Progressing":
        return True
    last = status.history[-1].reason if status.history else ""
    return status.phase == "Paused" and last in _ANALYSIS_PAUSES


def _queries(spec: ModelRolloutSpec, variables: dict[str, str]) -> dict[str, str]:
    """Every query rendered, keyed by what it is for; raises on a bad template."""
    assert spec.analysis is not None
    rendered: dict[str, str] = {}
    candidate = {"target.deployment": variables["candidate.deployment"]}
    for metric in spec.analysis.metrics:
        if metric.slo or metric.abort:  # a compare query's thresholds judge the candidate
            rendered[metric.name] = render(metric.query, variables | candidate)
        if metric.compare:
            for side in ("candidate", "stable"):
                target = {"target.deployment": variables[f"{side}.deployment"]}
                rendered[f"{metric.name}@{side}"] = render(metric.query, variables | target)
    if spec.analysis.samples_query:
        rendered["samplesQuery"] = render(spec.analysis.samples_query, variables)
    return rendered


@dataclass(frozen=True)
class TickAnalysis:
    """The analysis and the drift gate of one tick, and their combined verdict."""

    outcome: AnalysisOutcome
    drift: DriftStatus | None
    judgement: Judgement | None


async def preflight(
    spec: ModelRolloutSpec, namespace: str, sources: MetricsSources
) -> Judgement | None:
    """Before any traffic moves: every template renders and Prometheus accepts every
    query. A refusal fails the rollout; an unreachable Prometheus holds it."""
    if spec.analysis is None:
        return None
    first = spec.strategy.resolved_stages()[0].weight
    interval = spec.analysis.interval
    variables = variables_for(spec, namespace, first, interval, interval)
    try:
        queries = _queries(spec, variables)
    except UnknownVariable as error:
        return Judgement("invalid", "UnknownVariable", str(error))
    except UnsafeTemplate as error:
        return Judgement("invalid", "UnsafeTemplate", str(error))
    gate = spec.drift_gate
    if gate is not None:
        window = variables["window"]
        try:
            for side in ("candidate", "stable") if gate.reference.stable else ("candidate",):
                for what, query in drift.queries(gate, variables, side, window).items():
                    queries[f"drift {what}@{side}"] = query
            await sources.references.get(namespace, gate)
        except (UnknownVariable, UnsafeTemplate) as error:
            return Judgement("invalid", type(error).__name__, f"driftGate.selector: {error}")
        except ReferenceProblem as error:
            return Judgement("invalid", "InvalidReference", str(error))
        except ReferenceMissing:
            pass  # named by the targets check, and picked up once it exists
    try:
        source = await sources.source(spec, namespace)
    except SecretProblem as error:
        return Judgement("pause", "AnalysisUnavailable", str(error))
    readings = await asyncio.gather(*(source.instant(q) for q in queries.values()))
    for name, reading in zip(queries, readings, strict=True):
        if isinstance(reading, QueryRejected):
            what = name.split("@")[0]
            message = f"Prometheus refused the query of {what}: {reading.message}"
            return Judgement("invalid", "InvalidQuery", message)
        if isinstance(reading, QueryFailed):
            return Judgement("pause", "AnalysisUnavailable", f"before stage 1: {reading.message}")
    return None


async def observe(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    namespace: str,
    sources: MetricsSources,
    now: datetime,
) -> TickAnalysis:
    """One tick of analysis and drift for the current stage."""
    analysis = spec.analysis
    assert analysis is not None and status.stage_started_at is not None
    stage = spec.strategy.resolved_stages()[status.stage - 1]
    interval = parse_duration(analysis.interval).total_seconds()
    started = datetime.fromisoformat(status.stage_started_at.replace("Z", "+00:00"))
    window = window_for(started, now, interval)
    variables = variables_for(spec, namespace, stage.weight, analysis.interval, window)
    queries = _queries(spec, variables)
    try:
        source = await sources.source(spec, namespace)
    except SecretProblem as error:
        failed: Reading = QueryFailed(str(error))
        readings: dict[str, Reading] = {m.name: failed for m in analysis.metrics}
        samples = failed if analysis.samples_query else None
        outcome = _evaluate(spec, status, readings, samples, {}, window, now)
        return TickAnalysis(outcome, None, outcome.judgement)

    async def gate() -> drift.DriftObservation | None:
        if spec.drift_gate is None:
            return None
        references = sources.references
        return await drift.observe(
            spec, namespace, status.stage, status.drift, variables, window, source, references, now
        )

    metrics = {m.name: m for m in analysis.metrics}
    instant = {k: q for k, q in queries.items() if "@" not in k}
    values, gated = await asyncio.gather(
        asyncio.gather(*(source.instant(q) for q in instant.values())), gate()
    )
    readings = dict(zip(instant, values, strict=True))
    samples = readings.pop("samplesQuery", None)
    comparisons: dict[str, CompareResult] = {}
    for name, metric in metrics.items():
        if metric.compare is None:
            continue
        result = await _compare(source, metric, queries, started, now)
        if isinstance(result, CompareResult):
            comparisons[name] = result
        else:  # a failed range query stands for the metric: no comparison is no pass
            readings[name] = result
    outcome = _evaluate(spec, status, readings, samples, comparisons, window, now)
    if gated is None:
        return TickAnalysis(outcome, None, outcome.judgement)
    return TickAnalysis(outcome, gated.status, combine(outcome.judgement, gated.judgement))


async def _compare(
    source: PrometheusSource,
    metric: Metric,
    queries: dict[str, str],
    start: datetime,
    end: datetime,
) -> CompareResult | Reading:
    assert metric.compare is not None
    step = metric.compare.step
    candidate, stable = await asyncio.gather(
        source.series(queries[f"{metric.name}@candidate"], start, end, step),
        source.series(queries[f"{metric.name}@stable"], start, end, step),
    )
    for side in (candidate, stable):
        if not isinstance(side, list):
            return side
    assert isinstance(candidate, list) and isinstance(stable, list)
    return compare(candidate, stable, metric.compare)


def _evaluate(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    readings: dict[str, Reading],
    samples: Reading | None,
    comparisons: dict[str, CompareResult],
    window: str,
    now: datetime,
) -> AnalysisOutcome:
    assert spec.analysis is not None
    stage = spec.strategy.resolved_stages()[status.stage - 1]
    return evaluate(
        spec.analysis,
        status.stage,
        readings,
        samples,
        status.analysis,
        status.analysis_errors,
        parse_duration(window).total_seconds(),
        stage.min_samples,
        now,
        comparisons,
    )
