"""Observe the analysis for one tick: render the queries, ask the metrics source,
compare with the stable, and let the pure core judge.

Queries run only while a stage is being judged (core.phases.analysis_due), at most
one instant query per metric per tick.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from modelrollout.api.spec import Metric
from modelrollout.api.status import DriftStatus, MetricStatus
from modelrollout.controller import drift
from modelrollout.controller.references import ReferenceCache, ReferenceMissing
from modelrollout.core.compare import CompareResult, compare
from modelrollout.core.context import StageContext
from modelrollout.core.drift import combine
from modelrollout.core.slo import (
    MATCH_COUNT,
    MATCH_RATE,
    AnalysisOutcome,
    evaluate,
    preflight_judgement,
)
from modelrollout.core.types import Judgement, Reading
from modelrollout.metrics.template import UnknownVariable, UnsafeTemplate, render, render_open
from modelrollout.ports import MetricsSource, Shared
from modelrollout.reference import ReferenceProblem


def queries(ctx: StageContext) -> dict[str, str]:
    """Every query rendered, keyed by what it is for; raises on a bad template. A
    compare metric's thresholds judge the candidate; its comparison reads both sides."""
    rendered: dict[str, str] = {}
    for metric in ctx.analysis.metrics:
        if metric.slo or metric.abort:
            rendered[metric.name] = render(metric.query, ctx.for_side("candidate"))
        if metric.compare:
            for side in ("candidate", "stable"):
                rendered[f"{metric.name}@{side}"] = render(metric.query, ctx.for_side(side))
    if ctx.analysis.samples_query:
        rendered["samplesQuery"] = render(ctx.analysis.samples_query, ctx.variables)
    match = ctx.stage.match_rate
    if match is not None:
        selector = render(match.selector, ctx.variables)
        every = f"sum(increase({match.counter}{{{selector}}}[{ctx.window}]))"
        matched = f'sum(increase({match.counter}{{{selector},result="match"}}[{ctx.window}]))'
        rendered[MATCH_RATE] = f"{matched} / {every}"
        rendered[MATCH_COUNT] = every
    return rendered


def shared(ctx: StageContext) -> dict[str, Shared]:
    """The instant queries of `queries` in the form rollouts share, where they have
    one (metrics/grouping.py decides whether it can be asked for many)."""
    forms: dict[str, Shared] = {}
    for metric in ctx.analysis.metrics:
        if metric.slo or metric.abort:
            forms[metric.name] = render_open(metric.query, ctx.for_side("candidate"))
    if ctx.analysis.samples_query:
        forms["samplesQuery"] = render_open(ctx.analysis.samples_query, ctx.variables)
    return forms


@dataclass(frozen=True)
class TickAnalysis:
    """The analysis and the drift gate of one tick, and their combined verdict."""

    outcome: AnalysisOutcome
    drift: DriftStatus | None
    judgement: Judgement | None


async def preflight(
    ctx: StageContext, source: MetricsSource, references: ReferenceCache
) -> Judgement | None:
    """Before any traffic moves: every template renders and the source accepts every
    query (core.slo.preflight_judgement says what a refusal or an outage means)."""
    try:
        asked = queries(ctx)
    except (UnknownVariable, UnsafeTemplate) as error:
        return Judgement("invalid", type(error).__name__, str(error))
    gate = ctx.drift_gate
    if gate is not None:
        try:
            for side, rendered in drift.queries(ctx).items():
                asked |= {f"drift {what}@{side}": query for what, query in rendered.items()}
            await references.get(ctx.namespace, gate)
        except (UnknownVariable, UnsafeTemplate) as error:
            return Judgement("invalid", type(error).__name__, f"driftGate.selector: {error}")
        except ReferenceProblem as error:
            return Judgement("invalid", "InvalidReference", str(error))
        except ReferenceMissing:
            pass  # named by the targets check, and picked up once it exists
    readings = await asyncio.gather(*(source.instant(q) for q in asked.values()))
    return preflight_judgement(dict(zip(asked, readings, strict=True)))


async def observe(
    ctx: StageContext,
    previous: list[MetricStatus],
    errors_before: int,
    previous_drift: DriftStatus | None,
    source: MetricsSource,
    references: ReferenceCache,
) -> TickAnalysis:
    """One tick of analysis and drift for the stage in `ctx`; `previous`,
    `errors_before` and `previous_drift` are what the last tick left in status."""
    asked, forms = queries(ctx), shared(ctx)
    instant = {k: q for k, q in asked.items() if "@" not in k}

    async def gate() -> drift.DriftObservation | None:
        if ctx.drift_gate is None:
            return None
        return await drift.observe(ctx, previous_drift, source, references)

    values, gated = await asyncio.gather(
        asyncio.gather(*(source.instant(q, forms.get(k)) for k, q in instant.items())), gate()
    )
    readings: dict[str, Reading] = dict(zip(instant, values, strict=True))
    samples = readings.pop("samplesQuery", None)
    comparisons: dict[str, CompareResult] = {}
    for metric in ctx.analysis.metrics:
        if metric.compare is None:
            continue
        result = await _compare(ctx, source, metric, asked)
        if isinstance(result, CompareResult):
            comparisons[metric.name] = result
        else:  # a failed range query stands for the metric: no comparison is no pass
            readings[metric.name] = result
    outcome = evaluate(
        context=ctx,
        readings=readings,
        samples=samples,
        previous=previous,
        errors_before=errors_before,
        comparisons=comparisons,
    )
    if gated is None:
        return TickAnalysis(outcome, None, outcome.judgement)
    return TickAnalysis(outcome, gated.status, combine(outcome.judgement, gated.judgement))


async def _compare(
    ctx: StageContext, source: MetricsSource, metric: Metric, asked: dict[str, str]
) -> CompareResult | Reading:
    assert metric.compare is not None
    step = metric.compare.step
    candidate, stable = await asyncio.gather(
        source.series(asked[f"{metric.name}@candidate"], ctx.started, ctx.now, step),
        source.series(asked[f"{metric.name}@stable"], ctx.started, ctx.now, step),
    )
    if not isinstance(candidate, list):
        return candidate
    if not isinstance(stable, list):
        return stable
    return compare(candidate, stable, metric.compare)
