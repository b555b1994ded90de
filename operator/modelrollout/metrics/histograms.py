"""PromQL for the drift gate, and its answers turned into per-feature bins.

One query per side reads every feature at once: `sum by (feature, le)` of the
buckets' `increase` over the stage's window, so the gate costs one instant query
per side per tick whatever the number of features.

`increase` only counts what a series gained inside the window: a series that is
born already holding counts loses them. Servers should create every feature's
series at zero on start (the bundled model server does).

`increase` also extrapolates what it saw between the first and last scrape in the
window to the whole window. The proportions are unaffected (every bucket of a
server is scaled alike) but the count is not what was observed: with k scrapes in
the window only about (k - 1) / k of it was. PSI's noise depends on the observed
count, so the gate deflates the count by that factor (`observed_fraction`); with
two scrapes in the window half the count is real, with one there is nothing yet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from modelrollout.api.spec import DriftGate
from modelrollout.core.drift import Bins, BinsMismatch, from_cumulative
from modelrollout.core.types import Series

FEATURE_LABEL = "feature"
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def _quoted(value: str) -> str:
    """A PromQL double-quoted string holding `value` verbatim."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _one_of(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these values, as a PromQL string."""
    return _quoted("|".join(_RE2_SPECIAL.sub(r"\\\1", v) for v in sorted(values)))


def feature_buckets_query(gate: DriftGate, selector: str, window: str) -> str:
    matchers = f"{FEATURE_LABEL}=~{_one_of(gate.features)},{selector}"
    return (
        f"sum by ({FEATURE_LABEL}, le) (increase({gate.histogram}_bucket{{{matchers}}}[{window}]))"
    )


def scrapes_query(gate: DriftGate, selector: str, window: str) -> str:
    """The most scrapes any of the side's servers had in the window. The +Inf
    bucket always exists; `_count` is left out by some clients (negative edges)."""
    matchers = f'{FEATURE_LABEL}=~{_one_of(gate.features)},le="+Inf",{selector}'
    return f"max(count_over_time({gate.histogram}_bucket{{{matchers}}}[{window}]))"


def observed_fraction(series: Series) -> float:
    """(k - 1) / k for the k scrapes `scrapes_query` found; 0 without two scrapes."""
    scrapes = max((value for _, value in series if math.isfinite(value)), default=0.0)
    return (scrapes - 1) / scrapes if scrapes >= 2 else 0.0


def score_buckets_query(histogram: str, selector: str, window: str) -> str:
    return f"sum by (le) (increase({histogram}_bucket{{{selector}}}[{window}]))"


def categories_query(gate: DriftGate, selector: str, window: str) -> str:
    categorical = gate.categorical
    assert categorical is not None
    matchers = f"{FEATURE_LABEL}=~{_one_of(categorical.features)},{selector}"
    return (
        f"sum by ({FEATURE_LABEL}, {categorical.category_label}) "
        f"(increase({categorical.counter}{{{matchers}}}[{window}]))"
    )


def feature_bins(series: Series, features: Iterable[str]) -> dict[str, Bins | None]:
    """Each feature's bins from `sum by (feature, le)`; None for a feature without
    series. A malformed `le` raises BinsMismatch naming the feature."""
    buckets: dict[str, dict[float, float]] = {}
    for labels, value in series:
        feature = labels.get(FEATURE_LABEL)
        if feature is None:
            continue
        buckets.setdefault(feature, {})[_le(labels, feature)] = _finite(value)
    return {f: _bins(f, buckets[f]) if f in buckets else None for f in features}


def score_bins(series: Series, histogram: str) -> Bins | None:
    buckets = {_le(labels, histogram): _finite(value) for labels, value in series}
    return _bins(histogram, buckets) if buckets else None


def category_bins(
    series: Series, features: Iterable[str], category_label: str
) -> dict[str, Bins | None]:
    counts: dict[str, dict[str, float]] = {}
    for labels, value in series:
        feature, category = labels.get(FEATURE_LABEL), labels.get(category_label)
        if feature is None or category is None:
            continue
        counts.setdefault(feature, {})[category] = _finite(value)
    return {
        f: Bins(tuple(counts[f]), tuple(counts[f].values()), numeric=False) if f in counts else None
        for f in features
    }


def _le(labels: dict[str, str], what: str) -> float:
    raw = labels.get("le")
    try:
        return float(raw) if raw is not None else math.nan
    except ValueError:
        raise BinsMismatch(f"{what}: bucket le={raw!r} is not a number") from None


def _bins(what: str, buckets: dict[float, float]) -> Bins:
    if any(math.isnan(le) for le in buckets):
        raise BinsMismatch(f"{what}: a bucket series has no le label")
    try:
        return from_cumulative(buckets)
    except BinsMismatch as error:
        raise BinsMismatch(f"{what}: {error}") from None


def _finite(value: float) -> float:
    """increase() is NaN for a series with one sample in the window: nothing counted."""
    return value if math.isfinite(value) else 0.0
