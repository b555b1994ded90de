"""Analysis semantics: one finite sample or no data; abort at once; failureLimit in a
stage; blind is not bad until errorLimit; a refused query is invalid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrollout.api.spec import Analysis, Stage
from modelrollout.api.status import MetricStatus, NoDataKind, SamplesStatus, ThresholdStatus
from modelrollout.core.compare import CompareResult
from modelrollout.core.context import StageContext
from modelrollout.core.slo import AnalysisOutcome, classify, evaluate
from modelrollout.core.types import NoData, QueryFailed, QueryRejected, Reading, Value

NOW = datetime(2025, 1, 1, 12, 0, 5, tzinfo=UTC)
GOOD: dict[str, Reading] = {"error-rate": Value(0.01), "latency-p99": Value(0.2)}
DOWN = QueryFailed("Prometheus unreachable: ConnectTimeout")


def analysis(**overrides: Any) -> Analysis:
    spec: dict[str, Any] = {
        "prometheus": {"address": "http://prometheus:9090"},
        "failureLimit": 3,
        "errorLimit": 4,
        "metrics": [
            {
                "name": "error-rate",
                "query": "q1",
                "slo": {"max": 0.02},
                "abort": {"max": 0.05},
            },
            {"name": "latency-p99", "query": "q2", "slo": {"min": 0.01, "max": 0.3}},
        ],
    }
    spec.update(overrides)
    return Analysis.model_validate(spec)


def run(
    readings: Mapping[str, Reading],
    *,
    spec: Analysis | None = None,
    stage: int = 2,
    previous: Sequence[MetricStatus] = (),
    errors_before: int = 0,
    samples: Reading | None = None,
    min_samples: int | None = None,
    compare_results: Mapping[str, CompareResult] | None = None,
) -> AnalysisOutcome:
    return evaluate(
        context=context(spec or analysis(), stage, min_samples),
        readings={**GOOD, **readings},
        samples=samples,
        previous=previous,
        errors_before=errors_before,
        comparisons=compare_results or {},
    )


def context(spec: Analysis, stage: int = 2, min_samples: int | None = None) -> StageContext:
    """Stage `stage`, begun a minute before NOW: a 60 s window."""
    return StageContext(
        namespace="ns",
        analysis=spec,
        drift_gate=None,
        stage=Stage(weight=5, duration="1m", min_samples=min_samples),
        number=stage,
        started=NOW - timedelta(minutes=1),
        now=NOW,
        window="1m",
    )


def metric(outcome: AnalysisOutcome, name: str) -> MetricStatus:
    return next(m for m in outcome.metrics if m.name == name)


def ticks(values: Sequence[float], stage: int = 2) -> AnalysisOutcome:
    """Feed error-rate values tick after tick, each seeing the last status."""
    outcome = run({})
    for value in values:
        outcome = run({"error-rate": Value(value)}, stage=stage, previous=outcome.metrics)
    return outcome


# classify

POD_A = {"metric": {"pod": "a"}, "value": [1.7e9, "1"]}
POD_B = {"metric": {"pod": "b"}, "value": [1.7e9, "2"]}


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ([{"metric": {}, "value": [1.7e9, "0.25"]}], Value(0.25)),
        ([1.7e9, "3"], Value(3.0)),
        ([1700000000, "-1e-3"], Value(-0.001)),
        ([], NoData("empty")),
        ([POD_A, POD_B], NoData("multiple-series")),
        ([{"metric": {}, "value": [1.7e9, "NaN"]}], NoData("nan")),
        ([{"metric": {}, "value": [1.7e9, "+Inf"]}], NoData("inf")),
        ([{"metric": {}, "value": [1.7e9, "-Inf"]}], NoData("inf")),
        ([1.7e9, "NaN"], NoData("nan")),
    ],
)
def test_only_exactly_one_finite_sample_is_a_value(result: list[Any], expected: object) -> None:
    assert classify(result) == expected


def test_a_range_vector_is_not_a_result_to_judge() -> None:
    with pytest.raises(ValueError, match="not an instant vector or scalar"):
        classify([{"metric": {}, "values": [[1, "1"], [2, "2"]]}])


# thresholds and the failure counter


def test_every_metric_within_bounds_passes_and_reports_its_numbers() -> None:
    outcome = run({})
    assert outcome.judgement.verdict == "pass"
    assert outcome.judgement.reason == "AnalysisPassed"
    assert outcome.judgement.message == "all checks pass at stage 2 (error-rate, latency-p99)"
    assert outcome.errors == 0
    assert outcome.samples is None
    assert metric(outcome, "error-rate") == MetricStatus(
        name="error-rate",
        value=0.01,
        slo=ThresholdStatus(max=0.02),
        abort=ThresholdStatus(max=0.05),
        verdict="pass",
        consecutive_failures=0,
        stage=2,
        checked_at="2025-01-01T12:00:05Z",
        message="error-rate 0.01 within slo.max 0.02, abort.max 0.05 at stage 2",
    )


def test_an_abort_breach_rolls_back_on_the_first_tick() -> None:
    outcome = run({"error-rate": Value(0.12)})
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.reason == "AbortThresholdBreached"
    assert outcome.judgement.message == "error-rate 0.12 > abort.max 0.05 at stage 2"
    assert metric(outcome, "error-rate").verdict == "abort"


def test_an_abort_min_breach_rolls_back_too() -> None:
    spec = analysis(metrics=[{"name": "accuracy", "query": "q", "abort": {"min": 0.9}}])
    outcome = run({"accuracy": Value(0.85)}, spec=spec)
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.message == "accuracy 0.85 < abort.min 0.9 at stage 2"


def test_slo_failures_hold_the_stage_until_failure_limit_then_roll_back() -> None:
    first = ticks([0.03])
    assert first.judgement.verdict == "wait"
    assert first.judgement.reason == "SLOFailing"
    assert first.judgement.message == (
        "error-rate 0.03 > slo.max 0.02 at stage 2 (consecutive failure 1 of failureLimit 3)"
    )
    assert ticks([0.03, 0.03]).judgement.verdict == "wait"
    third = ticks([0.03, 0.03, 0.04])
    assert metric(third, "error-rate").consecutive_failures == 3
    assert third.judgement.verdict == "rollback"
    assert third.judgement.reason == "FailureLimitReached"
    assert "error-rate 0.04 > slo.max 0.02 at stage 2" in third.judgement.message


def test_a_pass_resets_the_failure_counter() -> None:
    assert metric(ticks([0.03, 0.03, 0.01]), "error-rate").consecutive_failures == 0
    outcome = ticks([0.03, 0.03, 0.01, 0.03, 0.03])
    assert metric(outcome, "error-rate").consecutive_failures == 2
    assert outcome.judgement.verdict == "wait"


def test_the_failure_counter_restarts_in_a_new_stage() -> None:
    at_stage_1 = ticks([0.03, 0.03], stage=1)
    outcome = run({"error-rate": Value(0.03)}, stage=2, previous=at_stage_1.metrics)
    assert metric(outcome, "error-rate").consecutive_failures == 1
    assert metric(outcome, "error-rate").stage == 2
    assert outcome.judgement.verdict == "wait"


# no data and errors


@pytest.mark.parametrize("kind", ["empty", "nan", "inf", "multiple-series"])
def test_no_data_holds_and_is_neither_a_pass_nor_a_failure(kind: NoDataKind) -> None:
    failing = ticks([0.03])
    outcome = run({"error-rate": NoData(kind)}, previous=failing.metrics)
    status = metric(outcome, "error-rate")
    assert (status.verdict, status.no_data, status.value) == ("nodata", kind, None)
    assert status.consecutive_failures == 1  # neither reset nor counted
    assert outcome.judgement.verdict == "wait"
    assert outcome.judgement.reason == "NoData"
    assert outcome.judgement.message.startswith("error-rate: no data (")
    assert outcome.errors == 1


def test_an_unreachable_prometheus_pauses_rather_than_failing() -> None:
    outcome = run({"latency-p99": DOWN}, errors_before=1)
    assert metric(outcome, "latency-p99").verdict == "error"
    assert metric(outcome, "latency-p99").consecutive_failures == 0
    assert outcome.judgement.verdict == "pause"
    assert outcome.judgement.reason == "AnalysisUnavailable"
    assert outcome.judgement.message == (
        "Prometheus unavailable at stage 2: latency-p99: Prometheus unreachable: ConnectTimeout"
    )
    assert outcome.errors == 2


def test_a_tick_with_every_reading_a_value_resets_the_error_counter() -> None:
    assert run({}, errors_before=3, samples=Value(10)).errors == 0


def test_error_limit_with_no_data_policy_rollback_rolls_back() -> None:
    spec = analysis(noDataPolicy="Rollback")
    outcome = run({"latency-p99": DOWN}, spec=spec, errors_before=3)
    assert outcome.errors == 4
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.reason == "NoDataPolicy"
    assert outcome.judgement.message == (
        "no data for 4 consecutive ticks (errorLimit 4) at stage 2: latency-p99: Prometheus "
        "unreachable: ConnectTimeout; noDataPolicy Rollback"
    )
    assert run({"latency-p99": DOWN}, spec=spec, errors_before=2).judgement.verdict == "pause"
    empty = run({"error-rate": NoData("empty")}, spec=spec, errors_before=3)
    assert empty.judgement.verdict == "rollback"
    assert "error-rate: no data (the query returned no series)" in empty.judgement.message


def test_error_limit_with_no_data_policy_pause_keeps_holding_and_says_so() -> None:
    outcome = run({"latency-p99": DOWN}, errors_before=3)
    assert outcome.judgement.verdict == "pause"
    assert outcome.judgement.reason == "AnalysisUnavailable"
    assert outcome.judgement.message.endswith(
        "; errorLimit 4 reached after 4 ticks without data, noDataPolicy Pause holds the weight"
    )
    empty = run({"error-rate": NoData("nan")}, errors_before=7)
    assert empty.judgement.verdict == "wait"
    assert "errorLimit 4 reached after 8 ticks" in empty.judgement.message


def test_a_refused_query_makes_the_analysis_invalid_whatever_else_happens() -> None:
    refused = QueryRejected('1:14: parse error: unexpected "}" in label matching')
    outcome = run({"latency-p99": refused, "error-rate": Value(0.5)}, errors_before=9)
    assert outcome.judgement.verdict == "invalid"
    assert outcome.judgement.reason == "InvalidQuery"
    assert outcome.judgement.message == (
        'Prometheus refused latency-p99: 1:14: parse error: unexpected "}" in label matching'
    )
    assert metric(outcome, "latency-p99").verdict == "error"


def test_rollback_outranks_pause_and_failures_outrank_no_data() -> None:
    outcome = run({"error-rate": Value(0.12), "latency-p99": DOWN})
    assert outcome.judgement.verdict == "rollback"
    held = run({"error-rate": Value(0.03), "latency-p99": NoData("empty")})
    assert held.judgement.verdict == "wait"
    assert held.judgement.reason == "SLOFailing"
    assert held.judgement.message.startswith("error-rate 0.03 > slo.max 0.02 at stage 2")
    assert (
        "latency-p99: no data (the query returned no series) at stage 2" in held.judgement.message
    )


def test_a_missing_reading_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="no reading for metric latency-p99"):
        evaluate(
            context=context(analysis(), 1),
            readings={"error-rate": Value(0)},
            samples=None,
            previous=[],
            errors_before=0,
        )


# compare


def compare_spec() -> Analysis:
    return analysis(
        metrics=[
            {"name": "latency", "query": "q", "compare": {"direction": "increase"}},
            {
                "name": "error-rate",
                "query": "q",
                "slo": {"max": 0.02},
                "abort": {"max": 0.05},
                "compare": {"direction": "increase"},
            },
        ]
    )


PASS = CompareResult("pass", 0.4, 1.01, "candidate mean 0.202 vs stable 0.2 (1.01x)")
FAIL = CompareResult("fail", 0.001, 1.3, "candidate mean 0.26 vs stable 0.2 (1.3x)")
UNSURE = CompareResult("inconclusive", None, None, "4 candidate and 40 stable points")


def test_a_failed_comparison_counts_like_an_slo_failure() -> None:
    outcome = run({}, spec=compare_spec(), compare_results={"latency": FAIL, "error-rate": PASS})
    latency = metric(outcome, "latency")
    assert (latency.verdict, latency.p_value, latency.effect) == ("fail", 0.001, 1.3)
    assert latency.value is None
    assert outcome.judgement.verdict == "wait"
    assert outcome.judgement.message == (
        "latency against stable: candidate mean 0.26 vs stable 0.2 (1.3x) "
        "(consecutive failure 1 of failureLimit 3)"
    )
    for _ in range(2):
        outcome = run(
            {},
            spec=compare_spec(),
            previous=outcome.metrics,
            compare_results={"latency": FAIL, "error-rate": PASS},
        )
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.reason == "FailureLimitReached"


def test_an_inconclusive_comparison_holds_and_a_passing_one_passes() -> None:
    unsure = run({}, spec=compare_spec(), compare_results={"latency": UNSURE, "error-rate": PASS})
    assert unsure.judgement.verdict == "wait"
    assert unsure.judgement.reason == "Inconclusive"
    assert metric(unsure, "latency").verdict == "inconclusive"
    passed = run({}, spec=compare_spec(), compare_results={"latency": PASS, "error-rate": PASS})
    assert passed.judgement.verdict == "pass"
    assert metric(passed, "error-rate").effect == 1.01


def test_with_thresholds_and_compare_the_worst_verdict_wins() -> None:
    results = {"latency": PASS, "error-rate": FAIL}
    fail = run({"error-rate": Value(0.01)}, spec=compare_spec(), compare_results=results)
    assert metric(fail, "error-rate").verdict == "fail"
    assert metric(fail, "error-rate").value == 0.01
    results = {"latency": PASS, "error-rate": PASS}
    abort = run({"error-rate": Value(0.07)}, spec=compare_spec(), compare_results=results)
    assert metric(abort, "error-rate").verdict == "abort"
    assert abort.judgement.verdict == "rollback"


def test_a_failed_range_query_of_a_comparison_is_reported_as_its_reading() -> None:
    outcome = run({"latency": DOWN}, spec=compare_spec(), compare_results={"error-rate": PASS})
    assert metric(outcome, "latency").verdict == "error"
    assert outcome.judgement.verdict == "pause"
    with pytest.raises(ValueError, match="no comparison"):
        run({}, spec=compare_spec(), compare_results={"latency": PASS})


# samples


def test_samples_report_count_rate_and_eta() -> None:
    outcome = run({}, samples=Value(120), min_samples=600)
    assert outcome.samples == SamplesStatus(
        count=120, required=600, rate_per_second=2.0, eta_seconds=240.0
    )
    assert outcome.judgement.samples == 120
    assert outcome.judgement.verdict == "pass"
    done = run({}, samples=Value(600), min_samples=600)
    assert done.samples is not None
    assert done.samples.eta_seconds is None
    idle = run({}, samples=Value(0), min_samples=600)
    assert idle.samples == SamplesStatus(count=0, required=600, rate_per_second=0.0)


def test_samples_without_a_value_hold_count_as_errors_and_carry_no_count() -> None:
    empty = run({}, samples=NoData("empty"), min_samples=600, errors_before=1)
    assert (empty.samples, empty.judgement.samples, empty.errors) == (None, None, 2)
    assert empty.judgement.verdict == "wait"
    assert empty.judgement.message == (
        "samplesQuery: no data (the query returned no series) at stage 2"
    )
    down = run({}, samples=DOWN, min_samples=600)
    assert down.judgement.verdict == "pause"
    assert "samplesQuery: Prometheus unreachable" in down.judgement.message
    refused = run({}, samples=QueryRejected("bad_data"), min_samples=600)
    assert refused.judgement.verdict == "invalid"
    assert refused.judgement.message == "Prometheus refused samplesQuery: bad_data"
