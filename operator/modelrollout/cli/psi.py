"""`modelrollout psi`: a data file's PSI against a reference, computed as the drift gate
computes it (core.drift's align and psi), so the two agree on the same counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from modelrollout.cli.bins import Binning, count, shares
from modelrollout.cli.table import DataProblem, Table, require_columns
from modelrollout.core.drift import Bins, align, psi
from modelrollout.reference import Distribution, Reference, ReferenceProblem, parse_reference

Aggregate = Literal["mean", "max"]
Kind = Literal["numeric", "categorical", "score"]
WARN, DRIFT = 0.1, 0.25  # the drift gate's default warn and max


@dataclass(frozen=True)
class FeaturePsi:
    feature: str
    kind: Kind
    psi: float
    samples: int

    @property
    def band(self) -> str:
        return band(self.psi)


def load_reference(path: Path, key: str) -> Reference:
    """A reference from a bare reference file or from a ConfigMap manifest's `key`."""
    if not path.is_file():
        raise ReferenceProblem(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReferenceProblem(f"{path}: not YAML: {_yaml_problem(error)}") from None
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        entries = data.get("data")
        if not isinstance(entries, dict) or not isinstance(entries.get(key), str):
            keys = ", ".join(map(str, entries)) if isinstance(entries, dict) else "none"
            raise ReferenceProblem(f"{path}: the ConfigMap has no data key {key}; it has: {keys}")
        return parse_reference(entries[key], f"{path}:{key}")
    return parse_reference(text, str(path))


def compare(table: Table, reference: Reference) -> list[FeaturePsi]:
    """PSI per feature, and for the score when the table has its column."""
    require_columns(table, [d.name for d in reference.features])
    checked: list[tuple[Distribution, Kind]] = [
        (d, "numeric" if d.edges is not None else "categorical") for d in reference.features
    ]
    score = reference.score
    if score is not None and score.name in table.columns:
        checked.append((score, "score"))
    numeric = [d for d, _ in checked if d.edges is not None]
    categorical = [d for d, _ in checked if d.categories is not None]
    binning = Binning(
        tuple(d.name for d in numeric),
        tuple(np.array(d.edges, dtype=np.float64) for d in numeric),
        tuple(d.name for d in categorical),
    )
    tally = count(table, binning)
    if tally.rows == 0:
        raise DataProblem(f"{table.name}: no data rows")
    results = []
    for distribution, kind in checked:
        if distribution.edges is not None:
            value = psi(
                shares(tally.numeric[numeric.index(distribution)]), distribution.proportions
            )
        else:
            counted = tally.categorical[categorical.index(distribution)]
            value = _categorical_psi(counted, distribution)
        results.append(FeaturePsi(distribution.name, kind, value, tally.rows))
    return results


def _categorical_psi(counted: Mapping[str, int], reference: Distribution) -> float:
    """Through core.drift.align: a category the reference lacks becomes a bin of its own
    with a reference share of 0, after the reference's categories."""
    assert reference.categories is not None
    seen = tuple(counted)
    current, expected = align(
        Bins(seen, shares([counted[k] for k in seen]), numeric=False),
        Bins(reference.categories, reference.proportions, numeric=False),
    )
    return psi(current, expected)


def aggregate(results: Sequence[FeaturePsi], method: Aggregate) -> float:
    values = [r.psi for r in results]
    return float(np.mean(values)) if method == "mean" else max(values)


def report(results: Sequence[FeaturePsi], method: Aggregate) -> dict[str, Any]:
    """The machine-readable result, `psi --json`."""
    total = aggregate(results, method)
    return {
        "features": [{**asdict(r), "band": r.band} for r in results],
        "aggregate": total,
        "aggregateMethod": method,
        "band": band(total),
    }


def table_lines(results: Sequence[FeaturePsi], method: Aggregate) -> list[str]:
    """The result as lines of a table, then the aggregate."""
    width = max(len("feature"), *(len(r.feature) for r in results))
    total = aggregate(results, method)
    return [
        f"{'feature':<{width}}  {'kind':<11}  {'psi':>8}  {'samples':>9}  band",
        *(
            f"{r.feature:<{width}}  {r.kind:<11}  {r.psi:8.4f}  {r.samples:9d}  {r.band}"
            for r in results
        ),
        f"{method} PSI {total:.4f} over {len(results)}: {band(total)}",
    ]


def band(value: float) -> str:
    """The drift gate's bands at its default thresholds (chance not accounted for)."""
    if value > DRIFT:
        return "drift"
    return "warn" if value > WARN else "stable"


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
