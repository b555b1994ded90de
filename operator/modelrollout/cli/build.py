"""`modelrollout reference build`: a training set's distribution as a drift reference.

Two passes keep memory bounded whatever the file's size. Bin edges only need to sit
near the quantiles, so the first pass reads a uniform sample of rows, drawn once the
rows are counted (for a CSV file, a quick scan for line breaks): every row when the file
has no more than the sample, so small files get their exact quantiles. Proportions are
what PSI compares, so the second pass counts every row into the chosen bins. The sample
is seeded: one file always gives one reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from modelrollout.cli.bins import Binning, category_counts, count, shares
from modelrollout.cli.table import DataProblem, Floats, Rows, Table, require_columns
from modelrollout.reference import Distribution, Reference

SAMPLE_VALUES = 2_000_000  # floats kept for the quantiles, all columns together: 16 MB
MAX_SAMPLE_ROWS = 1_000_000
SEED = 0


@dataclass(frozen=True)
class Request:
    features: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    score: str | None = None
    bins: int = 10


def build(table: Table, request: Request) -> Reference:
    both = set(request.features) & set(request.categorical)
    if both:
        raise DataProblem(f"numeric and categorical at once: {', '.join(sorted(both))}")
    numeric = tuple(dict.fromkeys([*request.features, *filter(None, [request.score])]))
    require_columns(table, [*numeric, *request.categorical])
    rows = table.count_rows()
    if rows == 0:
        raise DataProblem(f"{table.name}: no data rows")
    edges: tuple[Floats, ...] = ()
    if numeric:
        sample = table.sample(numeric, sample_rows(rows, len(numeric)))
        edges = tuple(quantile_edges(sample[:, j], request.bins) for j in range(len(numeric)))
    tally = count(table, Binning(numeric, edges, request.categorical))
    if tally.rows != rows:  # a CSV file's rows are its lines
        raise DataProblem(
            f"{table.name}: {rows} lines but {tally.rows} rows: "
            "a line break inside a quoted field is not supported"
        )
    try:
        numeric_found = {
            name: Distribution(
                name=name, edges=tuple(float(e) for e in edges[j]), proportions=shares(counts)
            )
            for j, (name, counts) in enumerate(zip(numeric, tally.numeric, strict=True))
        }
        categorical_found = [
            _categorical(name, counted)
            for name, counted in zip(request.categorical, tally.categorical, strict=True)
        ]
        return Reference(
            samples=tally.rows,
            features=(*(numeric_found[n] for n in request.features), *categorical_found),
            score=numeric_found[request.score] if request.score else None,
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise DataProblem(f"cannot make a reference: {problems}") from None


def quantile_edges(values: Floats, bins: int) -> Floats:
    """The 1/bins ... (bins-1)/bins quantiles (numpy's linear interpolation), each once:
    a heavily repeated value makes several coincide, and edges must rise strictly, so
    such a feature gets fewer bins. There is always one edge, so always two bins."""
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def sample_rows(rows: int, columns: int) -> Rows:
    """Ascending row indices, a uniform sample of at most SAMPLE_VALUES values."""
    size = min(rows, MAX_SAMPLE_ROWS, max(1, SAMPLE_VALUES // max(1, columns)))
    if size == rows:
        return np.arange(rows, dtype=np.int64)
    picked = np.random.default_rng(SEED).choice(rows, size=size, replace=False)
    return np.sort(picked).astype(np.int64)


def _categorical(name: str, counted: Mapping[str, int]) -> Distribution:
    categories, counts = category_counts(counted)
    if len(categories) < 2:
        seen = f"only {categories[0]!r}" if categories else "no values"
        raise DataProblem(f"categorical feature {name!r} has {seen}: PSI needs two categories")
    return Distribution(name=name, categories=categories, proportions=shares(counts))
