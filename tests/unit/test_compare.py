"""The Kayenta-style judge: significant AND large in the harmful direction fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelrollout.api.spec import Compare
from modelrollout.core.compare import compare, relative_effect

KAYENTA = Compare(direction="increase", tolerance=0.25, confidence=0.98, min_points=10)


def latency(rng: np.random.Generator, mean: float, points: int = 40) -> list[float]:
    """p99 latency points with 10% noise, as a scrape every step would give."""
    return list(rng.normal(mean, 0.1 * mean, points))


def test_a_30_percent_latency_increase_with_enough_noisy_points_fails() -> None:
    rng = np.random.default_rng(1)
    stable, candidate = latency(rng, 0.200), latency(rng, 0.260)
    result = compare(candidate, stable, KAYENTA)
    assert result.verdict == "fail"
    assert result.p_value is not None
    assert result.p_value < 0.02
    assert result.effect is not None
    assert result.effect == pytest.approx(np.mean(candidate) / np.mean(stable))
    assert 1.25 < result.effect < 1.4
    assert "increase is beyond the 25% tolerance" in result.message


def test_the_same_distribution_passes() -> None:
    rng = np.random.default_rng(2)
    result = compare(latency(rng, 0.2), latency(rng, 0.2), KAYENTA)
    assert result.verdict == "pass"
    assert result.p_value is not None
    assert result.p_value > 0.02
    assert result.effect == pytest.approx(1.0, abs=0.05)


def test_too_few_points_on_either_side_is_inconclusive_and_non_finite_points_do_not_count() -> None:
    rng = np.random.default_rng(3)
    candidate = [*latency(rng, 0.4, points=9), math.nan, math.inf, -math.inf]
    result = compare(candidate, latency(rng, 0.2), KAYENTA)
    assert result.verdict == "inconclusive"
    assert (result.p_value, result.effect) == (None, None)
    assert result.message == "9 candidate and 40 stable points; 10 each needed to compare"
    assert compare(latency(rng, 0.2), [], KAYENTA).verdict == "inconclusive"


def test_a_large_change_fails_only_in_the_harmful_direction() -> None:
    rng = np.random.default_rng(4)
    stable, candidate = latency(rng, 0.2), latency(rng, 0.3)
    assert compare(candidate, stable, KAYENTA).verdict == "fail"
    decrease = KAYENTA.model_copy(update={"direction": "decrease"})
    assert compare(candidate, stable, decrease).verdict == "pass"
    assert compare(stable, candidate, decrease).verdict == "fail"  # a 33% drop
    either = KAYENTA.model_copy(update={"direction": "either"})
    assert compare(candidate, stable, either).verdict == "fail"
    assert compare(stable, candidate, either).verdict == "fail"


def test_a_significant_change_within_the_tolerance_passes() -> None:
    rng = np.random.default_rng(5)
    stable = list(rng.normal(0.200, 0.002, 200))
    candidate = list(rng.normal(0.210, 0.002, 200))  # +5%, unmistakable but allowed
    result = compare(candidate, stable, KAYENTA)
    assert result.p_value is not None
    assert result.p_value < 1e-10
    assert result.verdict == "pass"
    assert "within tolerance" in result.message


def test_a_large_change_that_is_not_significant_passes() -> None:
    # Hand-checked: {4,5,6} against {1,2,3} is the most extreme of C(6,3) = 20
    # arrangements, so the exact two-sided p-value is 2/20 = 0.1; the effect is 5/2.
    spec = Compare(direction="increase", tolerance=0.25, confidence=0.95, min_points=3)
    result = compare([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], spec)
    assert result.p_value == pytest.approx(0.1)
    assert result.effect == pytest.approx(2.5)
    assert result.verdict == "pass"
    assert "not significant (needs p < 0.05)" in result.message
    lenient = spec.model_copy(update={"confidence": 0.85})
    assert compare([4.0, 5.0, 6.0], [1.0, 2.0, 3.0], lenient).verdict == "fail"


def test_a_stable_mean_of_zero_has_no_ratio_but_any_harmful_change_from_it_counts() -> None:
    stable = [0.0] * 20
    errors = [0.0] * 5 + [0.02] * 15
    result = compare(errors, stable, KAYENTA)
    assert result.effect is None
    assert result.verdict == "fail"
    assert "up from 0" in result.message
    assert compare(stable, stable, KAYENTA).effect == 1.0
    assert compare(stable, stable, KAYENTA).verdict == "pass"


def test_the_effect_keeps_its_direction_for_negative_means() -> None:
    assert relative_effect(0.3, 0.2) == pytest.approx(1.5)
    assert relative_effect(-0.1, -0.2) == pytest.approx(1.5)  # -0.2 to -0.1 is an increase
    assert relative_effect(0.0, 0.0) == 1.0
    assert relative_effect(1.0, 0.0) is None
