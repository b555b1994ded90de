"""Threshold verdicts, the failure and error counters, and no-data classification.

The promises (docs: "Analysis semantics"): a reading counts only when it is exactly
one finite sample, anything else is no data, which holds the stage and is never a
pass or a failure. An abort breach rolls back at once; failureLimit consecutive SLO
failures in a stage roll back. A Prometheus outage pauses (blind is not bad) until
errorLimit ticks without data apply noDataPolicy. A query Prometheus refuses can
never work: the analysis is invalid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from modelrollout.api.spec import Analysis, Metric, Threshold
from modelrollout.api.status import MetricStatus, NoDataKind, SamplesStatus, ThresholdStatus
from modelrollout.api.status import Verdict as MetricVerdict
from modelrollout.core.compare import CompareResult
from modelrollout.core.conditions import timestamp
from modelrollout.core.context import StageContext
from modelrollout.core.types import (
    Judgement,
    NoData,
    QueryFailed,
    QueryRejected,
    Reading,
    Value,
)


@dataclass(frozen=True)
class AnalysisOutcome:
    """What one tick of analysis writes to status, and its verdict for the machine."""

    metrics: list[MetricStatus]
    samples: SamplesStatus | None
    errors: int
    judgement: Judgement


_SEVERITY: dict[MetricVerdict, int] = {
    "pass": 0,
    "inconclusive": 1,
    "nodata": 2,
    "error": 3,
    "fail": 4,
    "abort": 5,
}
_NO_COMPARISONS: Mapping[str, CompareResult] = MappingProxyType({})


def classify(result: Sequence[Any]) -> Value | NoData:
    """Classify an instant query's `data.result`: a vector (list of series) or a
    scalar (`[ts, "value"]`). Raise ValueError for any other shape (a range vector,
    a string), which means the query is written wrongly."""
    if len(result) == 2 and isinstance(result[0], int | float) and isinstance(result[1], str):
        return _sample(result[1])
    if not result:
        return NoData("empty")
    if len(result) > 1:
        return NoData("multiple-series")
    series = result[0]
    if not isinstance(series, Mapping) or "value" not in series:
        raise ValueError(f"not an instant vector or scalar: {str(series)[:200]}")
    return _sample(series["value"][1])


def _sample(raw: object) -> Value | NoData:
    number = float(str(raw))  # Prometheus sends "NaN", "+Inf" and "-Inf" as text
    if math.isnan(number):
        return NoData("nan")
    if math.isinf(number):
        return NoData("inf")
    return Value(number)


def evaluate(
    *,
    context: StageContext,
    readings: Mapping[str, Reading],
    samples: Reading | None,
    previous: Sequence[MetricStatus],
    errors_before: int,
    comparisons: Mapping[str, CompareResult] = _NO_COMPARISONS,
) -> AnalysisOutcome:
    """Judge one tick. `readings` holds each metric's instant query (for a metric
    with compare, also the failure of its range queries); `comparisons` holds the
    judge's verdict for each metric with compare whose queries succeeded; `previous`
    and `errors_before` are what the last tick left in status."""
    analysis, stage = context.analysis, context.number
    before = {m.name: m for m in previous}
    judged = [*analysis.metrics, *match_rate_metrics(context)]
    held = _match_rate_held(context, readings)
    statuses = [
        _judge_metric(
            metric,
            readings.get(metric.name),
            comparisons.get(metric.name),
            before.get(metric.name),
            stage,
            analysis.failure_limit,
            timestamp(context.now),
            held.get(metric.name),
        )
        for metric in judged
    ]
    names = [m.name for m in judged] + [MATCH_COUNT]
    queried = {name: readings[name] for name in names if name in readings}
    if samples is not None:
        queried["samplesQuery"] = samples  # metric names are lowercase: no clash
    blind = any(not isinstance(r, Value) for r in queried.values())
    errors = errors_before + 1 if blind else 0
    count = samples.value if isinstance(samples, Value) else None
    judgement = replace(_judge(analysis, stage, statuses, queried, errors), samples=count)
    progress = _samples_status(count, context.stage.min_samples, context.window_seconds)
    return AnalysisOutcome(statuses, progress, errors, judgement)


MATCH_RATE, MATCH_COUNT = "match-rate", "match-rate#count"


def match_rate_metrics(context: StageContext) -> list[Metric]:
    """A mirror stage's match rate, judged like a metric named match-rate."""
    match = context.stage.match_rate
    if match is None:
        return []
    return [Metric(name=MATCH_RATE, query=match.counter, slo=match.slo, abort=match.abort)]


def _match_rate_held(context: StageContext, readings: Mapping[str, Reading]) -> dict[str, str]:
    """Too few comparisons yet: the match rate is not judged, whatever it is."""
    match, count = context.stage.match_rate, readings.get(MATCH_COUNT)
    if match is None or not isinstance(count, Value) or count.value >= match.min_samples:
        return {}  # no series at all is no data, said as such
    seen = count.value
    return {
        MATCH_RATE: f"{MATCH_RATE}: {seen:g} of minSamples {match.min_samples} comparisons "
        f"from the shadow comparator at stage {context.number}"
    }


def _judge_metric(
    metric: Metric,
    reading: Reading | None,
    comparison: CompareResult | None,
    previous: MetricStatus | None,
    stage: int,
    failure_limit: int,
    checked_at: datetime,
    held: str | None = None,
) -> MetricStatus:
    name = metric.name
    parts: list[tuple[MetricVerdict, str]] = []
    if held is not None and not isinstance(reading, QueryFailed | QueryRejected):
        parts.append(("inconclusive", held))
    elif isinstance(reading, QueryRejected):
        parts.append(("error", f"{name}: Prometheus refused the query: {reading.message}"))
    elif isinstance(reading, QueryFailed):
        parts.append(("error", f"{name}: query failed: {reading.message}"))
    elif isinstance(reading, NoData):
        why = _NO_COMPARISONS_HINT if name == MATCH_RATE else _NO_DATA[reading.kind]
        parts.append(("nodata", f"{name}: no data ({why}) at stage {stage}"))
    elif isinstance(reading, Value) and (metric.slo or metric.abort):
        parts.append(_judge_value(name, reading.value, metric, stage))
    elif reading is None and (metric.slo or metric.abort):
        raise ValueError(f"no reading for metric {name}")
    if comparison is not None:
        parts.append((comparison.verdict, f"{name} against stable: {comparison.message}"))
    elif metric.compare is not None and (reading is None or isinstance(reading, Value)):
        raise ValueError(f"no comparison, and no reading saying why, for metric {name}")
    verdict = max((v for v, _ in parts), key=_SEVERITY.__getitem__)
    carried = previous.consecutive_failures if previous and previous.stage == stage else 0
    failures = carried + 1 if verdict in ("fail", "abort") else 0 if verdict == "pass" else carried
    message = "; ".join(text for _, text in parts)
    if verdict == "fail":
        message += f" (consecutive failure {failures} of failureLimit {failure_limit})"
    return MetricStatus(
        name=name,
        value=reading.value if isinstance(reading, Value) else None,
        no_data=reading.kind if isinstance(reading, NoData) else None,
        slo=_bounds(metric.slo),
        abort=_bounds(metric.abort),
        verdict=verdict,
        consecutive_failures=failures,
        stage=stage,
        checked_at=checked_at,
        p_value=comparison.p_value if comparison else None,
        effect=comparison.effect if comparison else None,
        message=message[:4096],
    )


_NO_COMPARISONS_HINT = (
    "no comparisons from the shadow comparator for this rollout in the window: is it "
    "running in front of the stable with --rollout set to this rollout's name?"
)
_NO_DATA: dict[NoDataKind, str] = {
    "empty": "the query returned no series",
    "nan": "the value is NaN",
    "inf": "the value is infinite",
    "multiple-series": "the query returned several series, not one",
}


def _judge_value(name: str, value: float, metric: Metric, stage: int) -> tuple[MetricVerdict, str]:
    checks: tuple[tuple[MetricVerdict, str, Threshold | None], ...] = (
        ("abort", "abort", metric.abort),
        ("fail", "slo", metric.slo),
    )
    for verdict, label, bounds in checks:
        breach = _breach(value, label, bounds)
        if breach:
            return verdict, f"{name} {value:.6g} {breach} at stage {stage}"
    limits = ", ".join(
        f"{label}.{side} {bound:.6g}"
        for label, t in (("slo", metric.slo), ("abort", metric.abort))
        if t is not None
        for side, bound in (("min", t.min), ("max", t.max))
        if bound is not None
    )
    return "pass", f"{name} {value:.6g} within {limits} at stage {stage}"


def _breach(value: float, label: str, bounds: Threshold | None) -> str | None:
    if bounds is None:
        return None
    if bounds.min is not None and value < bounds.min:
        return f"< {label}.min {bounds.min:.6g}"
    if bounds.max is not None and value > bounds.max:
        return f"> {label}.max {bounds.max:.6g}"
    return None


def _bounds(threshold: Threshold | None) -> ThresholdStatus | None:
    return ThresholdStatus(min=threshold.min, max=threshold.max) if threshold else None


def _samples_status(
    count: float | None, required: int | None, window_seconds: float
) -> SamplesStatus | None:
    if count is None:
        return None
    rate = count / window_seconds if window_seconds > 0 else None
    eta = (required - count) / rate if rate and required and count < required else None
    return SamplesStatus(count=count, required=required, rate_per_second=rate, eta_seconds=eta)


def _judge(
    analysis: Analysis,
    stage: int,
    metrics: list[MetricStatus],
    queried: Mapping[str, Reading],
    errors: int,
) -> Judgement:
    """Combine the metrics' verdicts: invalid > rollback > pause > wait > pass."""
    rejected = [f"{n}: {r.message}" for n, r in queried.items() if isinstance(r, QueryRejected)]
    if rejected:
        return Judgement("invalid", "InvalidQuery", "Prometheus refused " + "; ".join(rejected))
    by_verdict = {v: [m.message or m.name for m in metrics if m.verdict == v] for v in _SEVERITY}
    if by_verdict["abort"]:
        return Judgement("rollback", "AbortThresholdBreached", "; ".join(by_verdict["abort"]))
    exhausted = [
        m.message or m.name
        for m in metrics
        if m.verdict == "fail" and m.consecutive_failures >= analysis.failure_limit
    ]
    if exhausted:
        return Judgement("rollback", "FailureLimitReached", "; ".join(exhausted))
    blind = [f"{n}: {_describe(r)}" for n, r in queried.items() if not isinstance(r, Value)]
    limit = analysis.error_limit
    if errors >= limit and analysis.no_data_policy == "Rollback":
        message = (
            f"no data for {errors} consecutive ticks (errorLimit {limit}) at stage {stage}: "
            + "; ".join(blind)
            + "; noDataPolicy Rollback"
        )
        return Judgement("rollback", "NoDataPolicy", message)
    reached = (
        f"; errorLimit {limit} reached after {errors} ticks without data, noDataPolicy Pause "
        "holds the weight"
        if errors >= limit
        else ""
    )
    if any(isinstance(r, QueryFailed) for r in queried.values()):
        failed = [f"{n}: {r.message}" for n, r in queried.items() if isinstance(r, QueryFailed)]
        message = f"Prometheus unavailable at stage {stage}: " + "; ".join(failed)
        return Judgement("pause", "AnalysisUnavailable", message + reached)
    samples = queried.get("samplesQuery")
    if isinstance(samples, NoData):
        by_verdict["nodata"].append(f"samplesQuery: {_describe(samples)} at stage {stage}")
    holding = by_verdict["fail"] + by_verdict["nodata"] + by_verdict["inconclusive"]
    if holding:
        reason = next(r for v, r in _HOLD_REASONS if by_verdict[v])
        return Judgement("wait", reason, "; ".join(holding) + reached)
    checked = ", ".join(m.name for m in metrics) or "no metrics"
    return Judgement("pass", "AnalysisPassed", f"all checks pass at stage {stage} ({checked})")


_HOLD_REASONS: tuple[tuple[MetricVerdict, str], ...] = (
    ("fail", "SLOFailing"),
    ("nodata", "NoData"),
    ("inconclusive", "Inconclusive"),
)


def _describe(reading: Reading) -> str:
    if isinstance(reading, NoData):
        return f"no data ({_NO_DATA[reading.kind]})"
    if isinstance(reading, QueryFailed | QueryRejected):
        return reading.message
    return f"{reading.value:.6g}"


def preflight_judgement(readings: Mapping[str, Reading]) -> Judgement | None:
    """Before any traffic moves, every query is asked once: the first refused one
    fails the rollout (it can never work), an unreachable source holds it, and data
    or no data is fine (nothing is judged yet). Keys may carry `@side` suffixes."""
    for name, reading in readings.items():
        if isinstance(reading, QueryRejected):
            what = name.split("@")[0]
            message = f"Prometheus refused the query of {what}: {reading.message}"
            return Judgement("invalid", "InvalidQuery", message)
        if isinstance(reading, QueryFailed):
            return Judgement("pause", "AnalysisUnavailable", f"before stage 1: {reading.message}")
    return None
