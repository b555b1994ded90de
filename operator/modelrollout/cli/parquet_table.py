"""Parquet files, read in record batches of the wanted columns only. pyarrow is an
optional dependency, imported when a Parquet file is opened."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrollout.cli.table import Chunk, DataProblem, Floats, Rows, T, require_columns

BATCH_ROWS = 65_536


class ParquetTable:
    """A Parquet file, read in record batches of the wanted columns only."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        self._arrow = _pyarrow()
        try:
            self._file = self._arrow.parquet.ParquetFile(str(path))
        except (OSError, self._arrow.lib.ArrowException) as error:
            raise DataProblem(f"{self.name}: not a Parquet file: {error}") from None
        self.columns = tuple(str(n) for n in self._file.schema_arrow.names)

    def count_rows(self) -> int:
        return int(self._file.metadata.num_rows)

    def _chunks(self, numeric: Sequence[str], categorical: Sequence[str]) -> Iterator[Chunk]:
        require_columns(self, [*numeric, *categorical])
        first_row = 0
        columns = list(dict.fromkeys([*numeric, *categorical]))
        for batch in self._file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            numbers = np.empty((batch.num_rows, len(numeric)))
            for j, name in enumerate(numeric):
                numbers[:, j] = self._floats(batch.column(name), name, first_row)
            categories = tuple(
                self._categories(batch.column(name), name, first_row) for name in categorical
            )
            yield Chunk(numbers, categories)
            first_row += batch.num_rows

    def map_chunks(
        self, numeric: Sequence[str], categorical: Sequence[str], work: Callable[[Chunk], T]
    ) -> Iterator[T]:
        return map(work, self._chunks(numeric, categorical))

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        values = np.empty((rows.size, len(numeric)))
        first_row = done = 0
        for chunk in self._chunks(numeric, ()):
            end = int(np.searchsorted(rows, first_row + chunk.rows))
            values[done:end] = chunk.numbers[rows[done:end] - first_row]
            first_row, done = first_row + chunk.rows, end
        return values

    def _floats(self, column: Any, name: str, first_row: int) -> Floats:
        self._no_nulls(column, name, first_row)
        types = self._arrow.types
        kind = column.type
        values: Floats
        if types.is_integer(kind) or types.is_floating(kind) or types.is_boolean(kind):
            as_floats = column.cast(self._arrow.float64()).to_numpy(zero_copy_only=False)
            values = np.asarray(as_floats, dtype=np.float64)
        else:  # decimals, strings: as float() reads them
            values = self._numbers(column.to_pylist(), name, first_row)
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.argmin(finite))
            raise DataProblem(
                f"{self.name}: column {name!r}, row {first_row + row + 1}: "
                f"{str(values[row])!r} is not a finite number"
            )
        return values

    def _numbers(self, values: list[Any], name: str, first_row: int) -> Floats:
        numbers = np.empty(len(values))
        for row, value in enumerate(values):
            try:
                numbers[row] = float(value)
            except (TypeError, ValueError):
                shown = repr(value if len(str(value)) <= 40 else str(value)[:37] + "...")
                raise DataProblem(
                    f"{self.name}: column {name!r}, row {first_row + row + 1}: "
                    f"{shown} is not a number"
                ) from None
        return numbers

    def _categories(self, column: Any, name: str, first_row: int) -> dict[str, int]:
        self._no_nulls(column, name, first_row)
        counted = column.value_counts()
        values = counted.field("values").to_pylist()
        counts = counted.field("counts").to_pylist()
        found: Counter[str] = Counter()
        for value, count in zip(values, counts, strict=True):
            found[str(value)] += int(count)
        return dict(found)

    def _no_nulls(self, column: Any, name: str, first_row: int) -> None:
        if column.null_count:
            row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
            raise DataProblem(
                f"{self.name}: column {name!r}, row {first_row + row + 1}: missing value"
            )


def _pyarrow() -> Any:
    """pyarrow, imported when a Parquet file is read: it is an optional dependency."""
    try:
        arrow = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise DataProblem("Parquet needs pyarrow: pip install pyarrow") from None
    return arrow
