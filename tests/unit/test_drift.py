"""PSI arithmetic, its critical value, and the drift gate's verdicts (pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.api.spec import DriftGate
from modelrollout.core.drift import (
    EPSILON,
    Bins,
    BinsMismatch,
    FeatureObservation,
    align,
    combine,
    critical_value,
    from_cumulative,
    g_statistic,
    judge,
    look_confidence,
    psi,
    psi_critical_value,
)
from modelrollout.core.types import Judgement

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DECILE_EDGES = tuple(float(e) for e in range(1, 10))


def test_psi_matches_hand_derived_values() -> None:
    # c = (.5, .5), r = (.25, .75): .25 ln 2 + (-.25) ln(2/3) = .25 ln 3
    assert psi([1, 1], [1, 3]) == pytest.approx(0.25 * math.log(3), abs=1e-12)
    # c = (.1, .2, .3, .4), r = .25 each: pairs of terms fold into .15 ln 4 + .05 ln 1.5
    expected = 0.15 * math.log(4) + 0.05 * math.log(1.5)
    assert psi([10, 20, 30, 40], [25, 25, 25, 25]) == pytest.approx(expected, abs=1e-12)


def test_an_empty_bin_is_smoothed_to_epsilon_and_stays_finite() -> None:
    # c = (0, 1) becomes (1e-4, 1) against r = (.5, .5); no renormalisation
    expected = (EPSILON - 0.5) * math.log(EPSILON / 0.5) + 0.5 * math.log(1 / 0.5)
    assert psi([0, 7], [3, 3]) == pytest.approx(expected, abs=1e-12)
    assert math.isfinite(psi([0, 0, 5], [5, 0, 0]))
    assert psi([0, 0, 5], [5, 0, 0]) < 20


def test_identical_distributions_give_zero() -> None:
    assert psi([3, 1, 4, 1, 5], [3, 1, 4, 1, 5]) == 0.0
    assert psi([0, 2, 0, 8], [0, 1, 0, 4]) == 0.0


counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=2, max_size=20)


@given(counts.flatmap(lambda c: st.tuples(st.just(c), st.lists(
    st.integers(min_value=0, max_value=10_000), min_size=len(c), max_size=len(c)
))), st.floats(min_value=1e-3, max_value=1e3))  # fmt: skip
def test_psi_is_non_negative_and_invariant_to_scaling_the_counts(
    pair: tuple[list[int], list[int]], scale: float
) -> None:
    current, reference = pair
    if sum(current) == 0 or sum(reference) == 0:
        return
    value = psi(current, reference)
    assert value >= 0
    scaled = psi([c * scale for c in current], [r * scale * 3 for r in reference])
    assert scaled == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_psi_refuses_mismatched_or_empty_sides() -> None:
    with pytest.raises(ValueError, match="same length"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="no observations"):
        psi([0, 0], [1, 1])


@pytest.mark.parametrize(("n", "m"), [(200, math.inf), (200, 2_000), (1_000, 1_000)])
def test_the_critical_value_matches_a_simulation_of_the_no_drift_null(n: int, m: float) -> None:
    """The 99th percentile of simulated no-drift PSI, decile bins, within 12%."""
    rng = np.random.default_rng(7)
    bins, trials = 10, 20_000
    truth = np.full(bins, 1 / bins)
    current = rng.multinomial(n, truth, size=trials)
    reference = (
        np.broadcast_to(truth, current.shape)
        if math.isinf(m)
        else rng.multinomial(int(m), truth, size=trials)
    )
    simulated = np.quantile([psi(c, r) for c, r in zip(current, reference, strict=True)], 0.99)
    predicted = critical_value(n, m, bins, 0.99)
    assert predicted == pytest.approx(simulated, rel=0.12)


def test_the_design_numbers_for_a_one_percent_stage() -> None:
    """Decile bins, 200 candidate requests, a large reference: the 99% critical
    value is about 0.11, above the usual 0.1 warning bar."""
    assert critical_value(200, math.inf, 10, 0.99) == pytest.approx(0.1083, abs=5e-4)
    assert critical_value(0, math.inf, 10, 0.99) == math.inf


def test_cumulative_buckets_are_differenced_into_bins() -> None:
    bins = from_cumulative({1.0: 2.0, 2.0: 5.0, 5.0: 9.0, math.inf: 10.0})
    assert bins.keys == (1.0, 2.0, 5.0)
    assert bins.counts == (2.0, 3.0, 4.0, 1.0)
    # increase() extrapolates buckets separately: a dip is clamped, never negative
    dipped = from_cumulative({1.0: 2.0, 2.0: 1.9, math.inf: 4.0})
    assert dipped.counts == (2.0, 0.0, 2.0)
    with pytest.raises(BinsMismatch, match=r"\+Inf"):
        from_cumulative({1.0: 1.0, 2.0: 2.0})


def test_numeric_bins_must_match_the_reference_edges() -> None:
    candidate = Bins((1.0, 2.0), (1.0, 1.0, 1.0), numeric=True)
    same = Bins((1.0 + 1e-12, 2.0), (0.3, 0.3, 0.4), numeric=True)
    c, r = align(candidate, same)
    assert list(c) == [1.0, 1.0, 1.0]
    assert list(r) == [0.3, 0.3, 0.4]
    with pytest.raises(BinsMismatch, match=r"candidate \[1, 2\], reference \[1, 3\]"):
        align(candidate, Bins((1.0, 3.0), (0.3, 0.3, 0.4), numeric=True))
    with pytest.raises(BinsMismatch, match="categorical"):
        align(candidate, Bins(("a", "b"), (0.5, 0.5), numeric=False))


def test_categories_are_united_and_an_unseen_one_counts_zero() -> None:
    candidate = Bins(("FR", "XX"), (5.0, 5.0), numeric=False)
    reference = Bins(("DE", "FR"), (0.6, 0.4), numeric=False)
    c, r = align(candidate, reference)
    assert list(c) == [0.0, 5.0, 5.0]
    assert list(r) == [0.6, 0.4, 0.0]


def _gate(**overrides: object) -> DriftGate:
    spec = {
        "histogram": "model_feature_value",
        "features": ["a", "b"],
        "reference": {"configMapRef": {"name": "ref"}},
        **overrides,
    }
    return DriftGate.model_validate(spec)


def _feature(
    name: str, counts: list[float], reference: list[float] | None = None
) -> FeatureObservation:
    uniform = [1.0 / len(counts)] * len(counts)
    edges = DECILE_EDGES[: len(counts) - 1]
    return FeatureObservation(
        name,
        Bins(edges, tuple(counts), numeric=True),
        Bins(edges, tuple(reference or uniform), numeric=True),
        reference_samples=100_000,
    )


FLAT = [100.0] * 10  # 1,000 observations, exactly the reference
SHIFTED = [10.0, 20, 40, 60, 90, 110, 140, 160, 180, 190]  # a clear shift, 1,000


def test_the_same_distribution_is_stable() -> None:
    outcome = judge(_gate(), [_feature("a", FLAT), _feature("b", FLAT)], NOW)
    assert outcome.status.verdict == "stable"
    assert outcome.status.aggregate == 0.0
    assert outcome.judgement.verdict == "pass"
    assert [f.verdict for f in outcome.status.features] == ["stable", "stable"]
    assert outcome.status.features[0].candidate_samples == 1_000
    assert outcome.status.features[0].reference_samples == 100_000


def test_drift_rolls_back_naming_the_feature() -> None:
    outcome = judge(_gate(), [_feature("a", FLAT), _feature("b", SHIFTED)], NOW)
    shifted = psi(SHIFTED, [1] * 10)
    assert shifted / 2 > 0.25  # the mean is beyond max
    assert outcome.status.aggregate == pytest.approx(shifted / 2)
    assert outcome.status.verdict == "drift"
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.reason == "DriftDetected"
    assert "features: b " in outcome.judgement.message
    assert ", a " not in outcome.judgement.message


def test_a_value_above_the_threshold_but_within_chance_is_not_drift() -> None:
    """200 samples, PSI 0.105 > warn 0.1 but below the 0.108 critical value."""
    gate = _gate(features=["a"], minSamples=200)
    counts = [20.0] * 10
    counts[0], counts[1] = 33.0, 7.0
    value = psi(counts, [1] * 10)
    current, reference = np.array(counts), np.full(10, 0.1)
    confidence = look_confidence(0.99, 1)
    critical = psi_critical_value(current, reference, 200, 100_000, confidence, value)
    assert 0.1 < value < critical
    assert critical == pytest.approx(critical_value(200, 100_000, 10, confidence), rel=0.15)
    outcome = judge(gate, [_feature("a", counts)], NOW)
    assert outcome.status.verdict == "stable"
    assert outcome.status.critical_value == pytest.approx(critical)


def test_below_min_samples_is_inconclusive_and_holds() -> None:
    outcome = judge(_gate(minSamples=5_000), [_feature("a", SHIFTED), _feature("b", FLAT)], NOW)
    assert outcome.status.verdict == "inconclusive"
    assert outcome.judgement.verdict == "wait"
    assert "1000 of minSamples 5000" in outcome.judgement.message


def test_a_feature_without_series_holds_naming_it() -> None:
    missing = FeatureObservation("b", None, Bins(DECILE_EDGES, tuple([0.1] * 10), numeric=True))
    outcome = judge(_gate(), [_feature("a", FLAT), missing], NOW)
    assert outcome.status.verdict == "nodata"
    assert outcome.judgement.verdict == "wait"
    assert "no b histogram series" in outcome.judgement.message


def test_bins_that_differ_from_the_reference_are_invalid() -> None:
    other = FeatureObservation(
        "b",
        Bins((1.0, 2.0), (1.0, 1.0, 1.0), numeric=True),
        Bins((1.0, 2.5), (0.3, 0.3, 0.4), numeric=True),
    )
    outcome = judge(_gate(), [_feature("a", FLAT), other], NOW)
    assert outcome.status.verdict == "invalid"
    assert outcome.judgement.verdict == "invalid"
    assert "feature b: bucket edges differ" in outcome.judgement.message


def test_observe_only_warns_and_never_blocks() -> None:
    gate = _gate(enforce=False)
    for features in (
        [_feature("a", FLAT), _feature("b", SHIFTED)],
        [_feature("a", [1.0] * 10), _feature("b", FLAT)],  # inconclusive
    ):
        outcome = judge(gate, features, NOW)
        assert outcome.judgement.verdict == "pass"
        assert outcome.status.enforced is False
    drifted = judge(gate, [_feature("a", FLAT), _feature("b", SHIFTED)], NOW)
    assert drifted.status.verdict == "drift"
    assert drifted.judgement.message.startswith("observe-only: drift")


def test_the_warn_band_passes() -> None:
    mild = [80.0, 90, 95, 100, 100, 100, 105, 105, 110, 115]
    value = psi(mild, [1] * 10)
    gate = _gate(features=["a"], warn=0.001, max=0.5)
    outcome = judge(gate, [_feature("a", [c * 20 for c in mild])], NOW)
    assert outcome.status.verdict == "warn"
    assert outcome.judgement.verdict == "pass"
    assert outcome.status.aggregate == pytest.approx(value)


def test_max_aggregation_uses_a_bonferroni_critical_value() -> None:
    gate = _gate(aggregate="max")
    outcome = judge(gate, [_feature("a", FLAT), _feature("b", SHIFTED)], NOW)
    assert outcome.status.aggregate == pytest.approx(psi(SHIFTED, [1] * 10))
    first_look = look_confidence(0.99, 1)
    shifted, flat, reference = np.array(SHIFTED), np.array(FLAT), np.full(10, 0.1)

    def critical(counts: np.ndarray, confidence: float) -> float:
        value = psi(counts, reference)
        return psi_critical_value(counts, reference, 1_000, 100_000, confidence, value)

    corrected = 1 - (1 - first_look) / 2
    assert outcome.status.features[1].critical_value == pytest.approx(critical(shifted, first_look))
    assert outcome.status.critical_value == pytest.approx(
        max(critical(flat, corrected), critical(shifted, corrected))
    )
    assert outcome.status.verdict == "drift"


def test_combine_keeps_the_graver_verdict_and_both_holds() -> None:
    passed = Judgement("pass", "AnalysisPassed", "ok", samples=10)
    rollback = Judgement("rollback", "DriftDetected", "drift")
    assert combine(passed, rollback) == Judgement("rollback", "DriftDetected", "drift", 10)
    assert combine(passed, None) is passed
    waiting = combine(Judgement("wait", "NoData", "x"), Judgement("wait", "DriftInconclusive", "y"))
    assert waiting == Judgement("wait", "NoData", "x; y")


def test_each_look_of_a_stage_spends_part_of_alpha() -> None:
    assert look_confidence(0.99, 1) == pytest.approx(1 - 0.01 / 2)
    assert look_confidence(0.99, 3) == pytest.approx(1 - 0.01 / 12)
    assert sum(1 - look_confidence(0.99, k) for k in range(1, 10_000)) < 0.01
    gate = _gate()
    features = [_feature("a", FLAT), _feature("b", FLAT)]
    first = judge(gate, features, NOW, stage=2)
    second = judge(gate, features, NOW, stage=2, previous=first.status)
    assert (first.status.looks, second.status.looks) == (1, 2)
    assert second.status.critical_value is not None
    assert first.status.critical_value is not None
    assert second.status.critical_value > first.status.critical_value
    next_stage = judge(gate, features, NOW, stage=3, previous=second.status)
    assert next_stage.status.looks == 1
    thin = judge(_gate(minSamples=10_000), features, NOW, stage=3, previous=next_stage.status)
    assert thin.status.looks == 1  # an inconclusive check is not a look


def test_repeated_looks_do_not_compound_false_alarms() -> None:
    """1,000 no-drift stages at 1%: 50 requests a tick, judged from 200 on, eight
    ticks each, with a strict max of 0.1. A fixed 0.1 bar fires in about 3% of the
    stages; the gate stays within 1 - confidence (1%) plus sampling error."""
    gate = _gate(features=["a"], warn=0.1, max=0.1)
    rng = np.random.default_rng(1)
    stages, fixed_bar, gate_fired = 1_000, 0, 0
    reference = Bins(DECILE_EDGES, tuple([0.1] * 10), numeric=True)
    for _ in range(stages):
        counts, previous, bar, fired = np.zeros(10), None, False, False
        for _tick in range(8):
            counts += rng.multinomial(50, [0.1] * 10)
            seen = Bins(DECILE_EDGES, tuple(counts), numeric=True)
            outcome = judge(
                gate, [FeatureObservation("a", seen, reference, 100_000)], NOW, 1, previous
            )
            previous = outcome.status
            bar = bar or (counts.sum() >= 200 and psi(counts, [1] * 10) > 0.1)
            fired = fired or outcome.judgement.verdict == "rollback"
        fixed_bar += bar
        gate_fired += fired
    assert gate_fired / stages <= 0.015
    assert fixed_bar / stages >= 0.02
    assert fixed_bar > 2 * gate_fired


# featureMax: one feature far out fails whatever the aggregate


MODERATE = [60.0, 70, 80, 90, 100, 100, 110, 120, 130, 140]  # PSI ~0.09 on its own


def test_one_feature_beyond_feature_max_fails_a_mean_that_passes() -> None:
    """Eight features at the reference and one shifted: the mean stays under max, the
    shifted feature alone is beyond featureMax (the reports' single feature at 4.87)."""
    features = [_feature(f"f{i}", FLAT) for i in range(8)] + [_feature("amount", SHIFTED)]
    shifted = psi(SHIFTED, [1] * 10)
    assert shifted > 0.5
    assert shifted / 9 < 0.25  # the mean alone would pass
    outcome = judge(_gate(features=[f.name for f in features]), features, NOW)
    assert outcome.status.verdict == "drift"
    assert outcome.judgement.verdict == "rollback"
    assert outcome.judgement.reason == "DriftDetected"
    assert f"feature amount {shifted:.4f} > featureMax 0.5" in outcome.judgement.message
    assert outcome.status.aggregate == pytest.approx(shifted / 9)


def test_a_feature_below_feature_max_leaves_the_verdict_to_the_aggregate() -> None:
    features = [_feature("a", FLAT), _feature("b", MODERATE)]
    assert psi(MODERATE, [1] * 10) < 0.5
    outcome = judge(_gate(), features, NOW)
    assert outcome.status.verdict != "drift"
    assert "featureMax" not in (outcome.status.message or "")


def test_feature_max_counts_only_beyond_the_features_corrected_critical_value() -> None:
    """With 40 samples, a PSI of 0.38 is within chance for one of two features."""
    thin = [1.0, 1, 2, 2, 4, 6, 6, 6, 6, 6]  # 40 observations
    value = psi(thin, [1] * 10)
    gate = _gate(features=["a", "b"], minSamples=40, featureMax=0.3)
    corrected = look_confidence(0.99, 1)
    corrected = 1 - (1 - corrected) / 2
    assert 0.3 < value < critical_value(40, 100_000, 10, corrected)
    outcome = judge(gate, [_feature("a", thin), _feature("b", FLAT)], NOW)
    assert outcome.status.verdict != "drift"


@pytest.mark.parametrize("n", [60, 80, 200])
def test_small_samples_alarm_no_more_often_than_the_confidence_allows(n: int) -> None:
    """No-drift decile samples at 1 - confidence = 1e-3. By the chi2 approximation
    alone, an empty bin's floored term would alarm 20 times too often at n = 60 (the
    e2e suite's minSamples); judged by the G test it stays near 1e-3."""
    rng = np.random.default_rng(11)
    reference, trials, confidence = np.full(10, 0.1), 20_000, 0.999
    samples = rng.multinomial(n, reference, size=trials).astype(np.float64)
    values = [psi(c, reference) for c in samples]
    alarms = sum(
        v > psi_critical_value(c, reference, n, math.inf, confidence, v)
        for c, v in zip(samples, values, strict=True)
    )
    approximate = sum(v > critical_value(n, math.inf, 10, confidence) for v in values)
    assert alarms / trials < 2e-3
    if n == 60:
        assert approximate / trials > 1e-2  # what the approximation alone would do


def test_two_finite_samples_alarm_no_more_often_than_the_confidence_allows() -> None:
    """A live stable reference of 1,000 against 60 candidate observations."""
    rng = np.random.default_rng(12)
    truth, trials = np.full(10, 0.1), 20_000
    candidates = rng.multinomial(60, truth, size=trials).astype(np.float64)
    stables = rng.multinomial(1_000, truth, size=trials).astype(np.float64)
    alarms = 0
    for c, r in zip(candidates, stables, strict=True):
        value = psi(c, r)
        alarms += value > psi_critical_value(c, r, 60, 1_000, 0.999, value)
    assert alarms / trials < 2e-3


def test_the_g_statistic_at_its_edges() -> None:
    flat = np.full(10, 0.1)
    assert g_statistic(flat * 100, flat, 100, math.inf) == (pytest.approx(0.0), 9)
    only = np.array([1.0, 0.0, 0.0])
    assert g_statistic(only, only, 50, math.inf) == (0.0, 0)  # nothing to compare
    assert g_statistic(np.array([1.0, 1.0]), np.array([1.0, 0.0]), 50, math.inf)[0] == math.inf
    # a real shift of one decile's mass is significant, by far, at 1,000 observations
    shifted = np.array(SHIFTED)
    g, degrees = g_statistic(shifted, flat, 1_000, 100_000)
    assert degrees == 9
    assert g > 100
    value = psi(shifted, flat)
    assert psi_critical_value(shifted, flat, 1_000, 100_000, 0.99, value) < value
