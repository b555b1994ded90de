"""Counting a table's values into bins, for `reference build` and `psi` alike.

Numeric bins follow Prometheus' `le` convention, as the reference's do: bin i holds
(edges[i-1], edges[i]], so a value equal to an edge belongs to the bin that edge closes,
which is where np.searchsorted(side="left") puts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from modelrollout.cli.table import Chunk, Floats, Table

Counts = NDArray[np.int64]


COMPARED_EDGES = 64  # up to this many edges, comparing beats a binary search per value


def le_counts(values: Floats, edges: Floats) -> Counts:
    """Counts per bin, len(edges) + 1 of them, the last above the last edge. With few
    edges, how many values lie above each edge: one vectorised comparison an edge,
    ten times quicker than np.searchsorted's branchy search per value."""
    if edges.size > COMPARED_EDGES:
        bins = np.searchsorted(edges, values, side="left")
        return np.bincount(bins, minlength=edges.size + 1).astype(np.int64)
    above = np.array(
        [values.size, *(np.count_nonzero(values > edge) for edge in edges.tolist()), 0],
        dtype=np.int64,
    )
    return above[:-1] - above[1:]


@dataclass
class Tally:
    """Counts per numeric bin and per category, for every column asked for."""

    numeric: list[Counts]
    categorical: list[Counter[str]]
    rows: int = 0

    def add(self, other: Tally) -> None:
        for mine, theirs in zip(self.numeric, other.numeric, strict=True):
            mine += theirs
        for counted, more in zip(self.categorical, other.categorical, strict=True):
            counted.update(more)
        self.rows += other.rows


@dataclass(frozen=True)
class Binning:
    """What to count: numeric columns with their edges, and categorical columns."""

    numeric: tuple[str, ...]
    edges: tuple[Floats, ...]
    categorical: tuple[str, ...] = ()

    def count(self, chunk: Chunk) -> Tally:
        numeric = [le_counts(v, e) for v, e in zip(chunk.numbers, self.edges, strict=True)]
        return Tally(numeric, [Counter(c) for c in chunk.categories], chunk.rows)


def count(table: Table, binning: Binning) -> Tally:
    """Every row of the table counted, a chunk at a time."""
    empty = [np.zeros(e.size + 1, np.int64) for e in binning.edges]
    total = Tally(empty, [Counter() for _ in binning.categorical])
    for chunk in table.chunks(binning.numeric, binning.categorical):
        total.add(binning.count(chunk))
    return total


def shares(counts: Sequence[float] | Counts) -> tuple[float, ...]:
    """Counts as proportions. `reference build` and `psi` both divide this way, so the
    same data gives the same floats, and a PSI of exactly 0."""
    total = float(np.sum(counts))
    return tuple(float(c) / total for c in counts)


def category_counts(counted: Mapping[str, int]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Categories, most frequent first (ties by name), and their counts."""
    ranked = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    return tuple(k for k, _ in ranked), tuple(n for _, n in ranked)
