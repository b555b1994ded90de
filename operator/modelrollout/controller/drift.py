"""Observe the drift gate for one tick: the reference, the candidate's histograms
from the metrics source, and the pure core's verdict.

The stable reference reads the stable's histograms over the same window, so both
sides saw the same hours of the same traffic mix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from modelrollout.api.spec import DriftGate
from modelrollout.api.status import DriftStatus
from modelrollout.controller.references import ReferenceCache, ReferenceMissing
from modelrollout.core.context import StageContext
from modelrollout.core.drift import (
    Bins,
    BinsMismatch,
    FeatureObservation,
    gate_applies,
    judge,
    query_problem,
    sides,
)
from modelrollout.core.types import Judgement, Series
from modelrollout.metrics import histograms
from modelrollout.metrics.template import render, render_open
from modelrollout.ports import MetricsSource, Shared
from modelrollout.reference import Distribution, Reference, ReferenceProblem


@dataclass(frozen=True)
class DriftObservation:
    """What the gate adds to a tick: its status (None when not checked) and verdict."""

    status: DriftStatus | None
    judgement: Judgement | None


def queries(ctx: StageContext) -> dict[str, dict[str, str]]:
    """The gate's queries for each side it reads; raises on a bad selector template."""
    gate = ctx.drift_gate
    assert gate is not None
    return {
        side: _side(gate, render(gate.selector, ctx.for_side(side)), ctx.variables["window"])
        for side in sides(gate)
    }


def shared(ctx: StageContext) -> dict[str, dict[str, Shared]]:
    """`queries` in the form rollouts share: the selector's values left open."""
    gate = ctx.drift_gate
    assert gate is not None
    out: dict[str, dict[str, Shared]] = {}
    for side in sides(gate):
        opened = render_open(gate.selector, ctx.for_side(side))
        forms = _side(gate, opened.text, ctx.variables["window"])
        out[side] = {what: Shared(text, opened.values) for what, text in forms.items()}
    return out


def _side(gate: DriftGate, selector: str, window: str) -> dict[str, str]:
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
    ctx: StageContext,
    previous: DriftStatus | None,
    source: MetricsSource,
    references: ReferenceCache,
) -> DriftObservation:
    gate = ctx.drift_gate
    assert gate is not None
    if not gate_applies(ctx):
        return DriftObservation(None, None)
    try:
        reference = await references.get(ctx.namespace, gate)
    except ReferenceMissing as error:
        return DriftObservation(None, Judgement("pause", "ReferenceNotFound", str(error)))
    except ReferenceProblem as error:
        return DriftObservation(None, Judgement("invalid", "InvalidReference", str(error)))
    forms = shared(ctx)
    flat = [(side, what, q) for side, qs in queries(ctx).items() for what, q in qs.items()]
    answers = await asyncio.gather(*(source.vector(q, forms[side][what]) for side, what, q in flat))
    seen: dict[str, dict[str, Series]] = {side: {} for side in sides(gate)}
    for (side, what, _), answer in zip(flat, answers, strict=True):
        problem = query_problem(what, answer)
        if problem is not None:
            return DriftObservation(None, problem)
        assert isinstance(answer, list)
        seen[side][what] = answer
    try:
        observations = _observations(gate, reference, seen)
    except BinsMismatch as error:
        return DriftObservation(None, Judgement("invalid", "DriftBinsMismatch", str(error)))
    outcome = judge(gate, observations, ctx.now, ctx.number, previous)
    return DriftObservation(outcome.status, outcome.judgement)


def _observations(
    gate: DriftGate, reference: Reference | None, seen: dict[str, dict[str, Series]]
) -> list[FeatureObservation]:
    observed = {side: histograms.observed_fraction(seen[side]["scrapes"]) for side in seen}
    candidate = _bins(gate, seen["candidate"])
    if reference is None:
        stable = _bins(gate, seen["stable"])
        return [
            FeatureObservation(
                name,
                bins,
                stable[name],
                _observed(stable[name], observed["stable"]),
                _observed(bins, observed["candidate"]),
            )
            for name, bins in candidate.items()
        ]
    return [
        FeatureObservation(
            name,
            bins,
            *_from_reference(reference, gate, name),
            _observed(bins, observed["candidate"]),
        )
        for name, bins in candidate.items()
    ]


def _observed(bins: Bins | None, fraction: float) -> float | None:
    return bins.total * fraction if bins is not None else None


def _bins(gate: DriftGate, answers: dict[str, Series]) -> dict[str, Bins | None]:
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
