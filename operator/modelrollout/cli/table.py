"""What `reference build` and `psi` read: a table's columns, streamed in chunks of rows.

A chunk holds the numeric columns as floats and the categorical ones as counts per
category, so memory follows the chunk size, never the file's. Every value is checked:
a missing, non-numeric or non-finite value stops the read with a message naming the
column and the row (counted from 1, the header not counted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Rows = NDArray[np.int64]
T = TypeVar("T")


class DataProblem(ValueError):
    """The data cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Chunk:
    numbers: Floats  # rows x the numeric columns asked for
    categories: tuple[dict[str, int], ...]  # per categorical column asked for

    @property
    def rows(self) -> int:
        return int(self.numbers.shape[0])


class Table(Protocol):
    name: str
    columns: tuple[str, ...]

    def count_rows(self) -> int: ...

    def map_chunks(
        self, numeric: Sequence[str], categorical: Sequence[str], work: Callable[[Chunk], T]
    ) -> Iterator[T]:
        """`work` applied to every chunk, in order, perhaps in parallel."""
        ...

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        """The numeric columns' values in these rows (0-based, ascending)."""
        ...


def require_columns(table: Table, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        which = ", ".join(repr(n) for n in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise DataProblem(
            f"{table.name}: no {noun} {which}; it has: {', '.join(table.columns) or 'none'}"
        )
