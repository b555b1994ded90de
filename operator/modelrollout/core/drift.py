"""PSI, its no-drift critical value, bucket differencing, and the drift gate's verdict.

PSI = sum over bins of (c - r) * ln(c / r), with c and r the current and reference
proportions. Each term is >= 0, so PSI >= 0, and it depends on proportions only,
so scaling the counts changes nothing.

Empty bins: a proportion below EPSILON (1e-4) is raised to EPSILON, without
renormalising (the convention Evidently uses). An empty bin against a reference
of 10% then adds about 0.1 * ln(0.1 / 1e-4) = 0.69: large and finite, never inf.

Noise: for two samples of sizes n and m from one distribution over B bins, PSI is
approximately (1/n + 1/m) * chi2(B - 1). Decile bins with n = 200 against a large
reference give a mean of 0.045 and a 99th percentile of 0.11, so a fixed 0.1 bar
fires by chance at a 1% stage. The gate therefore counts drift only when PSI is
above the threshold *and* above a critical value at the chosen confidence.

That approximation fails in the far tail at small n: an empty bin adds about 0.69
(the floor above), and at n = 60 a decile bin is empty often enough that 1.8% of
no-drift samples cross the chi2 bar meant for 1e-5. Significance is therefore the
likelihood-ratio (G) test of the two samples, Williams-corrected, which stays close
to its nominal rate down to a few counts per bin. The critical value reported is
the PSI at which this feature's gap reaches that significance, PSI * chi2 / G: where
the approximation holds it equals (1/n + 1/m) * chi2(B - 1).

Repeated looks: a stage is checked every interval, and each look is another chance
of a false alarm. Look k of a stage uses alpha / (k (k + 1)), alpha = 1 - confidence;
these sum to alpha, so the chance of a false alarm in a whole stage, however many
looks it takes, stays within 1 - confidence.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray
from scipy.special import chdtri

from modelrollout.api.spec import DriftGate
from modelrollout.api.status import DriftStatus, DriftVerdict, FeatureDrift
from modelrollout.core.conditions import timestamp
from modelrollout.core.context import StageContext
from modelrollout.core.types import Judgement, QueryFailed, QueryRejected, Reading, Series

EPSILON = 1e-4
EDGE_RTOL = 1e-9

Floats = NDArray[np.float64]


class BinsMismatch(ValueError):
    """The candidate and the reference use different bins: PSI would be meaningless."""


@dataclass(frozen=True)
class Bins:
    """Counts (or proportions) per bin.

    Numeric: `keys` are the finite upper edges, ascending, and `counts` has one more
    entry, for the bin above the last edge. Categorical: one key per category.
    """

    keys: tuple[float, ...] | tuple[str, ...]
    counts: tuple[float, ...]
    numeric: bool

    @property
    def total(self) -> float:
        return float(sum(self.counts))


def from_cumulative(buckets: Mapping[float, float]) -> Bins:
    """Per-bin counts from a classic histogram's cumulative `le` buckets.

    `increase()` extrapolates each bucket separately, so neighbours can come out a
    hair out of order; a negative difference is clamped to zero rather than trusted.
    """
    edges = sorted(buckets)
    if not edges or not math.isinf(edges[-1]):
        raise BinsMismatch("the histogram has no +Inf bucket")
    cumulative = np.maximum.accumulate(np.array([buckets[e] for e in edges], dtype=np.float64))
    counts = np.diff(cumulative, prepend=0.0)
    return Bins(tuple(edges[:-1]), tuple(float(c) for c in counts), numeric=True)


def align(candidate: Bins, reference: Bins) -> tuple[Floats, Floats]:
    """The two count vectors over the same bins. Numeric bins must match exactly
    (edges within a relative 1e-9, for formatting); categories are united, an unseen
    category counting zero."""
    if candidate.numeric != reference.numeric:
        raise BinsMismatch("one side is numeric (le buckets), the other categorical")
    if candidate.numeric:
        c_edges = np.array(candidate.keys, dtype=np.float64)
        r_edges = np.array(reference.keys, dtype=np.float64)
        if c_edges.shape != r_edges.shape or not np.allclose(
            c_edges, r_edges, rtol=EDGE_RTOL, atol=0
        ):
            raise BinsMismatch(
                f"bucket edges differ: candidate {_edges(candidate.keys)}, "
                f"reference {_edges(reference.keys)}"
            )
        return _floats(candidate.counts), _floats(reference.counts)
    keys = list(reference.keys) + sorted(set(candidate.keys) - set(reference.keys), key=str)
    c = dict(zip(candidate.keys, candidate.counts, strict=True))
    r = dict(zip(reference.keys, reference.counts, strict=True))
    return _floats([c.get(k, 0.0) for k in keys]), _floats([r.get(k, 0.0) for k in keys])


def psi(current: Sequence[float] | Floats, reference: Sequence[float] | Floats) -> float:
    """PSI of two count (or proportion) vectors over the same bins."""
    c, r = _floats(current), _floats(reference)
    if c.shape != r.shape or c.ndim != 1 or c.size < 2:
        raise ValueError(f"need two vectors of the same length >= 2, got {c.shape}, {r.shape}")
    if c.sum() <= 0 or r.sum() <= 0:
        raise ValueError("a side has no observations")
    c = np.maximum(c / c.sum(), EPSILON)
    r = np.maximum(r / r.sum(), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def critical_value(n: float, m: float, bins: int, confidence: float) -> float:
    """The PSI two no-drift samples of sizes n and m exceed with probability
    1 - confidence, by the chi2 approximation. m = inf means a reference known exactly."""
    if n <= 0 or m <= 0:
        return math.inf
    return (1 / n + 1 / m) * _chi2_quantile(confidence, bins - 1)


@functools.lru_cache(maxsize=4096)
def _chi2_quantile(confidence: float, degrees: int) -> float:
    # scipy.special, not scipy.stats: the same quantile for a third of the memory, which
    # every operator replica would otherwise carry for one function
    return float(chdtri(degrees, 1 - confidence))


def g_statistic(current: Floats, reference: Floats, n: float, m: float) -> tuple[float, int]:
    """The Williams-corrected likelihood-ratio statistic that the candidate (n
    observations) and the reference (m; inf: known exactly) share one distribution,
    and its degrees of freedom. Only the vectors' proportions are used, so
    extrapolated counts may be passed with the observed sizes."""
    p, q = current / current.sum(), reference / reference.sum()
    if math.isinf(m):
        bins = int(np.count_nonzero((p > 0) | (q > 0)))
        if bins < 2:
            return 0.0, 0
        seen = p > 0
        if np.any(q[seen] == 0):
            return math.inf, bins - 1  # mass where an exact reference has none
        g = 2 * n * float(np.sum(p[seen] * np.log(p[seen] / q[seen])))
        return g / (1 + (bins + 1) / (6 * n)), bins - 1
    observed = np.vstack([p * n, q * m])
    totals = observed.sum(axis=0)
    observed = observed[:, totals > 0]
    totals = totals[totals > 0]
    bins = totals.size
    if bins < 2:
        return 0.0, 0
    whole = n + m
    expected = np.outer([n / whole, m / whole], totals)
    seen = observed > 0
    g = 2 * float(np.sum(observed[seen] * np.log(observed[seen] / expected[seen])))
    williams = 1 + (whole / n + whole / m - 1) * (whole * float(np.sum(1 / totals)) - 1) / (
        6 * whole * (bins - 1)
    )
    return g / williams, bins - 1


def psi_critical_value(
    current: Floats, reference: Floats, n: float, m: float, confidence: float, value: float
) -> float:
    """The PSI at which this gap is significant at `confidence` by the G test: PSI
    is above it exactly when G is above its chi2 quantile."""
    approximate = critical_value(n, m, current.size, confidence)
    if not math.isfinite(approximate):
        return approximate
    g, degrees = g_statistic(current, reference, n, m)
    if degrees < 1:
        return math.inf  # one bin holds everything on both sides: nothing to compare
    if math.isinf(g):
        return 0.0
    if g <= 1e-12 or value <= 1e-12:
        return approximate
    return value * _chi2_quantile(confidence, degrees) / g


@dataclass(frozen=True)
class FeatureObservation:
    """One feature's candidate and reference this tick. None: no series at all."""

    name: str
    candidate: Bins | None
    reference: Bins | None
    reference_samples: float | None = None  # default: the reference's total
    candidate_samples: float | None = None  # default: the candidate's total


@dataclass(frozen=True)
class DriftOutcome:
    status: DriftStatus
    judgement: Judgement


def look_confidence(confidence: float, look: int) -> float:
    """The confidence of look `look` (1-based) of a stage: alpha / (k (k + 1))."""
    return 1 - (1 - confidence) / (look * (look + 1))


def judge(
    gate: DriftGate,
    features: Sequence[FeatureObservation],
    now: datetime,
    stage: int = 1,
    previous: DriftStatus | None = None,
) -> DriftOutcome:
    """The gate's verdict: per feature, then on the aggregate (mean or max), and on
    each feature against featureMax.

    The aggregate's critical value is conservative under any correlation between
    features: for the mean, the mean of the features' critical values; for the max,
    each feature's at confidence 1 - (1 - confidence) / K (Bonferroni). A single
    feature beyond featureMax counts only beyond that corrected critical value too."""
    looks_before = previous.looks if previous is not None and previous.stage == stage else 0
    confidence = look_confidence(gate.confidence, looks_before + 1)
    rows = [_feature(gate, f, confidence) for f in features]
    problems = [r.message for r in rows if r.verdict == "invalid" and r.message]
    missing = [r.row.feature for r in rows if r.verdict == "nodata"]
    thin = [r for r in rows if r.verdict == "inconclusive"]
    scored = [r for r in rows if r.row.psi is not None]
    aggregate = critical = None
    outliers: list[FeatureDrift] = []
    if scored and len(scored) == len(rows):
        values = [r.row.psi for r in scored if r.row.psi is not None]
        corrected = 1 - (1 - confidence) / len(rows)
        alone = [_feature(gate, f, corrected) for f in features]
        outliers = [r.row for r in alone if r.row.psi is not None and r.row.psi > gate.feature_max
                    and r.row.psi > r.critical]  # fmt: skip
        if gate.aggregate == "mean":
            aggregate = float(np.mean(values))
            critical = float(np.mean([r.row.critical_value for r in scored]))
        else:
            aggregate = max(values)
            critical = max(r.critical for r in alone)
    verdict: DriftVerdict
    if problems:
        verdict, message = "invalid", "; ".join(problems)
    elif missing:
        verdict = "nodata"
        message = f"no {', '.join(missing)} histogram series in the window: the gate holds"
    elif thin:
        verdict = "inconclusive"
        message = "; ".join(r.message for r in thin if r.message)
    else:
        assert aggregate is not None and critical is not None
        verdict = "drift" if outliers else _band(gate, aggregate, critical)
        message = _summary(gate, aggregate, critical, verdict, rows, outliers)
    conclusive = verdict in ("stable", "warn", "drift")
    status = DriftStatus(
        aggregate=aggregate,
        critical_value=critical,
        verdict=verdict,
        enforced=gate.enforce,
        stage=stage,
        looks=looks_before + 1 if conclusive else looks_before,
        features=[r.row for r in rows],
        checked_at=timestamp(now),
        message=message[:4096],
    )
    return DriftOutcome(status, _judgement(gate, verdict, message))


@dataclass(frozen=True)
class _Row:
    row: FeatureDrift
    critical: float
    message: str | None = None

    @property
    def verdict(self) -> DriftVerdict:
        return self.row.verdict


def _feature(gate: DriftGate, obs: FeatureObservation, confidence: float) -> _Row:
    name = obs.name
    if obs.candidate is None or obs.reference is None:
        side = "candidate" if obs.candidate is None else "reference"
        return _Row(FeatureDrift(feature=name, verdict="nodata"), math.inf, f"{name}: no {side}")
    try:
        current, reference = align(obs.candidate, obs.reference)
    except BinsMismatch as error:
        row = FeatureDrift(feature=name, verdict="invalid")
        return _Row(row, math.inf, f"feature {name}: {error}")
    n = float(obs.candidate_samples if obs.candidate_samples is not None else current.sum())
    m = float(obs.reference_samples if obs.reference_samples is not None else reference.sum())
    value = psi(current, reference) if n > 0 and m > 0 else None
    critical = (
        critical_value(n, m, current.size, confidence)
        if value is None
        else psi_critical_value(current, reference, n, m, confidence, value)
    )
    row = FeatureDrift(
        feature=name,
        psi=value,
        critical_value=critical if math.isfinite(critical) else None,
        candidate_samples=n,
        reference_samples=m,
        verdict="inconclusive",
    )
    if n < gate.min_samples or value is None:
        message = f"{name}: {n:.0f} of minSamples {gate.min_samples} candidate observations"
        if m <= 0:
            message = f"{name}: the reference has no observations in the window"
        return _Row(row, critical, message)
    return _Row(row.model_copy(update={"verdict": _band(gate, value, critical)}), critical)


def _band(gate: DriftGate, value: float, critical: float) -> DriftVerdict:
    if value <= critical:
        return "stable"
    if value > gate.max:
        return "drift"
    return "warn" if value > gate.warn else "stable"


def _summary(
    gate: DriftGate,
    aggregate: float,
    critical: float,
    verdict: DriftVerdict,
    rows: list[_Row],
    outliers: list[FeatureDrift],
) -> str:
    ranked = sorted(
        (r.row for r in rows if r.row.psi is not None), key=lambda f: f.psi or 0, reverse=True
    )
    named = [f for f in ranked if f.verdict in ("drift", "warn")] or ranked[:1]
    listed = ", ".join(f"{f.feature} {f.psi:.4f}" for f in named)
    where = f"{gate.aggregate} PSI {aggregate:.4f} (critical value {critical:.4f})"
    alone = ", ".join(f"{f.feature} {f.psi:.4f}" for f in outliers)
    beyond = f"feature {alone} > featureMax {gate.feature_max:g}"
    if aggregate > critical and aggregate > gate.max:
        whole = f"drift: {where} > max {gate.max:g}; features: {listed}"
        return f"{whole}; {beyond}" if outliers else whole
    if outliers:
        return f"drift: {beyond}; {where}"
    if verdict == "warn":
        return f"drift warning: {where} > warn {gate.warn:g}; features: {listed}"
    return f"no drift: {where}; highest: {listed}"


def _judgement(gate: DriftGate, verdict: DriftVerdict, message: str) -> Judgement:
    if not gate.enforce:
        return Judgement("pass", "DriftObserved", f"observe-only: {message}")
    if verdict == "invalid":
        return Judgement("invalid", "DriftBinsMismatch", message)
    if verdict == "drift":
        return Judgement("rollback", "DriftDetected", message)
    if verdict == "nodata":
        return Judgement("wait", "DriftNoData", message)
    if verdict == "inconclusive":
        return Judgement("wait", "DriftInconclusive", f"drift inconclusive: {message}")
    return Judgement("pass", "DriftPassed", message)


_ORDER = ("invalid", "rollback", "pause", "wait", "pass")


def combine(first: Judgement | None, second: Judgement | None) -> Judgement | None:
    """The graver of two verdicts (invalid > rollback > pause > wait > pass); holds
    from both are reported together, so status says everything the stage waits for."""
    if first is None or second is None:
        return first or second
    a, b = _ORDER.index(first.verdict), _ORDER.index(second.verdict)
    if a == b and first.verdict in ("wait", "pause"):
        samples = first.samples if first.samples is not None else second.samples
        message = f"{first.message}; {second.message}"
        return Judgement(first.verdict, first.reason, message, samples)
    graver = first if a <= b else second
    samples = first.samples if first.samples is not None else second.samples
    return Judgement(graver.verdict, graver.reason, graver.message, samples)


def _floats(values: Sequence[float] | Floats) -> Floats:
    return np.asarray(values, dtype=np.float64)


def _edges(keys: tuple[float, ...] | tuple[str, ...]) -> str:
    shown = ", ".join(f"{k:g}" if isinstance(k, float) else k for k in keys[:12])
    return f"[{shown}{', ...' if len(keys) > 12 else ''}]"


def gate_applies(ctx: StageContext) -> bool:
    """Against the stable's live traffic there is nothing to compare with once the
    stable serves nothing (a 100% stage): the gate keeps its last verdict there."""
    gate = ctx.drift_gate
    return gate is not None and (gate.reference.stable is None or ctx.stage.weight < 100)


def sides(gate: DriftGate) -> tuple[str, ...]:
    """Whose histograms the gate reads: the candidate's, and the stable's when it is
    the reference."""
    return ("candidate", "stable") if gate.reference.stable is not None else ("candidate",)


def query_problem(what: str, reading: Reading | Series) -> Judgement | None:
    """A drift query that cannot be read: refused is invalid, unreachable pauses."""
    if isinstance(reading, QueryRejected):
        message = f"Prometheus refused the drift gate's {what} query: {reading.message}"
        return Judgement("invalid", "InvalidQuery", message)
    if isinstance(reading, QueryFailed):
        return Judgement("pause", "AnalysisUnavailable", f"drift gate: {reading.message}")
    return None
