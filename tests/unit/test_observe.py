"""The analysis and drift observers on an in-memory metrics source: what they ask
(one instant query per metric per tick), and how answers become verdicts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fakes import FakeObjects, InMemorySource
from world import T0, gateway_spec

from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus
from modelrollout.controller import analysis, drift
from modelrollout.controller.references import ReferenceCache
from modelrollout.core.context import StageContext, stage_context
from modelrollout.core.types import NoData, QueryFailed, QueryRejected, Series, Value
from modelrollout.metrics.connections import FailingSource

NOW = T0 + timedelta(minutes=2)
ERRORS = 'sum(rate(errors{deployment="{{candidate.deployment}}"}[{{window}}]))'
LATENCY = 'avg(latency{deployment="{{target.deployment}}"})'
ANALYSIS: dict[str, Any] = {
    "interval": "10s",
    "prometheus": {"address": "http://prometheus.monitoring.svc:9090"},
    "samplesQuery": 'sum(increase(requests{deployment="{{candidate.deployment}}"}[{{window}}]))',
    "metrics": [
        {"name": "error-rate", "query": ERRORS, "slo": {"max": 0.01}, "abort": {"max": 0.05}},
        {"name": "latency", "query": LATENCY, "compare": {"direction": "increase", "step": "10s"}},
    ],
}


def context(spec: ModelRolloutSpec, stage: int = 2) -> StageContext:
    status = ModelRolloutStatus(stage=stage, stage_started_at=T0, phase="Progressing")
    return stage_context(spec, status, "ns", NOW, rollout="fraud")


def observe(source: Any, spec: ModelRolloutSpec | None = None) -> analysis.TickAnalysis:
    spec = spec or gateway_spec(analysis=ANALYSIS)
    references = ReferenceCache(FakeObjects())
    return asyncio.run(analysis.observe(context(spec), [], 0, None, source, references))


def test_the_stage_context_renders_each_side_and_the_window_since_the_stage_began() -> None:
    ctx = context(gateway_spec(analysis=ANALYSIS))
    assert ctx.window == "2m"
    assert analysis.queries(ctx) == {
        "error-rate": 'sum(rate(errors{deployment="v2"}[2m]))',
        "latency@candidate": 'avg(latency{deployment="v2"})',
        "latency@stable": 'avg(latency{deployment="v1"})',
        "samplesQuery": 'sum(increase(requests{deployment="v2"}[2m]))',
    }


def test_one_instant_query_per_metric_and_a_range_per_side_of_a_comparison() -> None:
    source = InMemorySource.of(
        {
            "errors": Value(0.001),
            "requests": Value(600.0),
            'latency{deployment="v2"}': [0.10, 0.11, 0.10, 0.12] * 3,
            'latency{deployment="v1"}': [0.10, 0.11, 0.10, 0.12] * 3,
        }
    )
    tick = observe(source)
    kinds = sorted(kind for kind, _ in source.asked)
    assert kinds == ["instant", "instant", "series", "series"]
    assert tick.judgement is not None
    assert tick.judgement.verdict == "pass"
    assert tick.judgement.samples == 600.0
    latency = next(m for m in tick.outcome.metrics if m.name == "latency")
    assert latency.verdict == "pass"
    assert latency.p_value is not None
    assert tick.outcome.samples is not None
    assert tick.outcome.samples.rate_per_second == 5.0  # 600 in the 2m window


def test_a_failed_range_query_stands_for_its_metric_and_pauses() -> None:
    down = QueryFailed("Prometheus unreachable: ConnectTimeout")
    source = InMemorySource.of({"errors": Value(0.001), "requests": Value(600.0), "latency": down})
    tick = observe(source)
    latency = next(m for m in tick.outcome.metrics if m.name == "latency")
    assert latency.verdict == "error"
    assert tick.judgement is not None
    assert (tick.judgement.verdict, tick.judgement.reason) == ("pause", "AnalysisUnavailable")
    assert tick.outcome.errors == 1


def test_an_abort_breach_rolls_back_on_the_tick_it_is_seen() -> None:
    points = [0.1] * 12
    source = InMemorySource.of({"errors": Value(0.2), "requests": Value(600.0), "latency": points})
    tick = observe(source)
    assert tick.judgement is not None
    assert (tick.judgement.verdict, tick.judgement.reason) == (
        "rollback",
        "AbortThresholdBreached",
    )


def test_a_connection_that_cannot_be_made_is_blindness_not_failure() -> None:
    tick = observe(FailingSource("Secret prometheus-auth not found"))
    assert tick.judgement is not None
    assert tick.judgement.verdict == "pause"
    assert "Secret prometheus-auth not found" in tick.judgement.message


def preflight(source: Any, spec: ModelRolloutSpec) -> Any:
    ctx = context(spec, stage=0)
    return asyncio.run(analysis.preflight(ctx, source, ReferenceCache(FakeObjects())))


def test_preflight_asks_every_query_once_and_fails_on_a_refused_one() -> None:
    spec = gateway_spec(analysis=ANALYSIS)
    fine = InMemorySource.of({}, default=NoData("empty"))
    assert preflight(fine, spec) is None
    assert len(fine.asked) == 4  # error-rate, both sides of latency, samples
    refused = InMemorySource.of({"latency": QueryRejected('parse error: unexpected "}"')})
    judgement = preflight(refused, spec)
    assert (judgement.verdict, judgement.reason) == ("invalid", "InvalidQuery")
    assert "Prometheus refused the query of latency" in judgement.message
    down = InMemorySource.of({}, default=QueryFailed("Prometheus unreachable: refused"))
    assert preflight(down, spec).verdict == "pause"


def test_preflight_names_an_unknown_variable_before_asking_anything() -> None:
    broken = {**ANALYSIS, "metrics": [{"name": "x", "query": "up{{{typo}}}", "slo": {"max": 1}}]}
    source = InMemorySource.of({})
    judgement = preflight(source, gateway_spec(analysis=broken))
    assert (judgement.verdict, judgement.reason) == ("invalid", "UnknownVariable")
    assert "{{typo}}" in judgement.message
    assert source.asked == []


# -- the drift gate against the stable's live traffic -------------------------------

EDGES = [str(e) for e in (10, 20, 30, 40, 50, 60, 70, 80, 90)] + ["+Inf"]
GATE: dict[str, Any] = {
    "histogram": "model_feature_value",
    "features": ["amount", "age"],
    "reference": {"stable": {}},
    "minSamples": 200,
}


def buckets(feature: str, counts: list[float]) -> Series:
    cumulative, total = [], 0.0
    for count in counts:
        total += count
        cumulative.append(total)
    return [({"feature": feature, "le": le}, c) for le, c in zip(EDGES, cumulative, strict=True)]


def histograms(shift_amount: bool) -> Any:
    even = [100.0] * 10
    shifted = [10.0, 20, 40, 60, 90, 110, 140, 160, 180, 190]

    def answer(query: str) -> Any:
        candidate = 'deployment="v2"' in query
        if "count_over_time" in query:  # scrapes in the window
            return [({}, 60.0)]
        amount = shifted if candidate and shift_amount else even
        return buckets("amount", amount) + buckets("age", even)

    return InMemorySource(answer)


def gate(source: InMemorySource, stage: int = 2) -> drift.DriftObservation:
    spec = gateway_spec(analysis=ANALYSIS, driftGate=GATE)
    references = ReferenceCache(FakeObjects())
    return asyncio.run(drift.observe(context(spec, stage), None, source, references))


def test_drift_against_the_stable_is_caught_and_names_the_feature() -> None:
    observed = gate(histograms(shift_amount=True))
    assert observed.judgement is not None
    assert (observed.judgement.verdict, observed.judgement.reason) == ("rollback", "DriftDetected")
    assert observed.status is not None
    by_feature = {f.feature: f for f in observed.status.features}
    assert by_feature["amount"].verdict == "drift"
    assert by_feature["age"].verdict == "stable"
    assert "amount" in observed.judgement.message


def test_the_same_live_distribution_passes_and_both_sides_are_read() -> None:
    source = histograms(shift_amount=False)
    observed = gate(source)
    assert observed.judgement is not None
    assert observed.judgement.verdict == "pass"
    read = {("v2" if 'deployment="v2"' in q else "v1") for _, q in source.asked}
    assert read == {"v1", "v2"}
    assert len(source.asked) == 4  # features and scrapes, per side: whatever the features


def test_the_stable_reference_is_not_read_at_a_full_stage() -> None:
    source = histograms(shift_amount=True)
    assert gate(source, stage=4) == drift.DriftObservation(None, None)
    assert source.asked == []


# -- the shadow comparator's match rate --------------------------------------------

SHADOW_STAGES = {
    "stages": [
        {
            "weight": 0,
            "mirror": True,
            "duration": "1m",
            "matchRate": {"slo": {"min": 0.95}, "abort": {"min": 0.9}, "minSamples": 200},
        },
        {"weight": 100, "duration": "1m"},
    ]
}
SHADOW = gateway_spec(strategy=SHADOW_STAGES, analysis={**ANALYSIS, "metrics": []})


def shadow(rate: Any, count: Any) -> analysis.TickAnalysis:
    source = InMemorySource(
        lambda q: (
            (rate if 'result="match"' in q else count) if "shadow" in q else Value(100.0)
        )  # samples
    )
    references = ReferenceCache(FakeObjects())
    ctx = context(SHADOW, stage=1)
    return asyncio.run(analysis.observe(ctx, [], 0, None, source, references))


def test_the_match_rate_reads_this_rollouts_comparator_series() -> None:
    asked = analysis.queries(context(SHADOW, stage=1))
    selector = 'namespace="ns",rollout="fraud"'
    every = f"sum(increase(modelrollout_shadow_comparisons_total{{{selector}}}[2m]))"
    assert asked["match-rate#count"] == every
    assert asked["match-rate"] == (
        "sum(increase(modelrollout_shadow_comparisons_total"
        f'{{{selector},result="match"}}[2m])) / {every}'
    )


def test_a_match_rate_above_its_slo_passes_with_enough_comparisons() -> None:
    tick = shadow(Value(0.97), Value(500.0))
    assert tick.judgement is not None
    assert tick.judgement.verdict == "pass"
    rate = next(m for m in tick.outcome.metrics if m.name == "match-rate")
    assert (rate.value, rate.verdict) == (0.97, "pass")


def test_a_match_rate_below_its_abort_bound_rolls_back_with_the_rate() -> None:
    tick = shadow(Value(0.85), Value(500.0))
    assert tick.judgement is not None
    assert (tick.judgement.verdict, tick.judgement.reason) == (
        "rollback",
        "AbortThresholdBreached",
    )
    assert "match-rate 0.85 < abort.min 0.9 at stage 1" in tick.judgement.message


def test_too_few_comparisons_hold_whatever_the_rate() -> None:
    tick = shadow(Value(0.5), Value(120.0))
    assert tick.judgement is not None
    assert tick.judgement.verdict == "wait"
    assert "match-rate: 120 of minSamples 200 comparisons" in tick.judgement.message


def test_a_missing_comparator_holds_and_says_so() -> None:
    tick = shadow(NoData("empty"), NoData("empty"))
    assert tick.judgement is not None
    assert tick.judgement.verdict == "wait"
    assert "no comparisons from the shadow comparator" in tick.judgement.message
    assert "--rollout" in tick.judgement.message
