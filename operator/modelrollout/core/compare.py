"""Candidate against stable on the same query, judged as Kayenta's judge does.

Each side is a series of time-series points (one per `compare.step`), not single
requests. A difference fails the candidate only when it is both significant (a
two-sided Mann-Whitney test) and large (the ratio of means beyond the tolerance
in the harmful direction): a tiny but significant shift on a busy service, or a
large but noisy one on a quiet service, passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from modelrollout.api.spec import Compare

CompareVerdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class CompareResult:
    """The judge's verdict with its numbers; p_value and effect go to status."""

    verdict: CompareVerdict
    p_value: float | None
    effect: float | None
    message: str


def compare(candidate: Sequence[float], stable: Sequence[float], spec: Compare) -> CompareResult:
    """Judge `candidate` against `stable`; non-finite points are dropped first."""
    cand = [x for x in candidate if math.isfinite(x)]
    base = [x for x in stable if math.isfinite(x)]
    if len(cand) < spec.min_points or len(base) < spec.min_points:
        return CompareResult(
            "inconclusive",
            None,
            None,
            f"{len(cand)} candidate and {len(base)} stable points; "
            f"{spec.min_points} each needed to compare",
        )
    from scipy.stats import mannwhitneyu  # ~45 MB: loaded only by rollouts that compare

    p_value = float(mannwhitneyu(cand, base, alternative="two-sided").pvalue)
    cand_mean, base_mean = sum(cand) / len(cand), sum(base) / len(base)
    effect = relative_effect(cand_mean, base_mean)
    alpha = 1 - spec.confidence
    significant = p_value < alpha
    harmful = _beyond_tolerance(cand_mean, base_mean, effect, spec)
    numbers = (
        f"candidate mean {cand_mean:.4g} vs stable {base_mean:.4g} "
        f"({_describe(effect, cand_mean, base_mean)}), p={p_value:.3g}"
    )
    if significant and harmful:
        change = "increase" if cand_mean > base_mean else "decrease"
        return CompareResult(
            "fail",
            p_value,
            effect,
            f"{numbers} < {alpha:.3g}, and the {change} is beyond the "
            f"{spec.tolerance * 100:g}% tolerance",
        )
    why = "within tolerance" if not harmful else f"not significant (needs p < {alpha:.3g})"
    return CompareResult("pass", p_value, effect, f"{numbers}: {why}")


def relative_effect(cand_mean: float, base_mean: float) -> float | None:
    """mean(candidate) / mean(stable), such that above 1 always means an increase.

    For a negative stable mean the plain ratio would flip direction, so it is
    1 + difference / |stable mean| instead (equal to the ratio when positive).
    A stable mean of 0 has no ratio: the effect is 1.0 when the candidate's mean
    is 0 too, and None otherwise; any change from 0 then counts as beyond every
    tolerance, in the direction of its sign.
    """
    if base_mean == 0:
        return 1.0 if cand_mean == 0 else None
    return 1 + (cand_mean - base_mean) / abs(base_mean)


def _beyond_tolerance(
    cand_mean: float, base_mean: float, effect: float | None, spec: Compare
) -> bool:
    if effect is None:
        increase, decrease = cand_mean > base_mean, cand_mean < base_mean
    else:
        increase, decrease = effect > 1 + spec.tolerance, effect < 1 - spec.tolerance
    if spec.direction == "increase":
        return increase
    if spec.direction == "decrease":
        return decrease
    return increase or decrease


def _describe(effect: float | None, cand_mean: float, base_mean: float) -> str:
    if effect is None:
        return "up from 0" if cand_mean > base_mean else "down from 0"
    return f"{effect:.3g}x"
