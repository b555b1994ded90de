"""What `reference build` and `psi` read: a table's columns, streamed in chunks of rows.

A chunk holds each numeric column as floats and each categorical one as counts per
category, so memory follows the chunk size, never the file's. Every value is checked:
a missing, non-numeric or non-finite value stops the read with a message naming the
column and the row (counted from 1, the header not counted).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Rows = NDArray[np.int64]


class DataProblem(ValueError):
    """The data cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Chunk:
    numbers: tuple[Floats, ...]  # per numeric column asked for
    categories: tuple[dict[str, int], ...]  # per categorical column asked for
    rows: int


class Table(Protocol):
    name: str
    columns: tuple[str, ...]

    def count_rows(self) -> int: ...

    def chunks(self, numeric: Sequence[str], categorical: Sequence[str]) -> Iterator[Chunk]:
        """Every row, in order, a chunk at a time."""
        ...

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        """The numeric columns' values in these rows (0-based, ascending), rows x columns."""
        ...


def require_columns(table: Table, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        which = ", ".join(repr(n) for n in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise DataProblem(
            f"{table.name}: no {noun} {which}; it has: {', '.join(table.columns) or 'none'}"
        )


def pyarrow(kind: str, *modules: str) -> Any:
    """pyarrow and these of its modules, imported when a file is read: the `cli`
    extra, which the operator's image leaves out."""
    try:
        arrow = importlib.import_module("pyarrow")
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        raise DataProblem(f"{kind} needs pyarrow: pip install pyarrow") from None
    return arrow


def category_counts(column: Any) -> dict[str, int]:
    """Counts per value of a pyarrow string or binary array without nulls."""
    counted = column.value_counts()
    found: dict[str, int] = {}
    for value, count in zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    ):
        text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
        found[text] = found.get(text, 0) + int(count)
    return found


def shown(value: object) -> str:
    """A value as an error message quotes it: repr, cut at 40 characters."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")
