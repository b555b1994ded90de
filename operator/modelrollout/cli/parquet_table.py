"""Parquet files, read a record batch at a time (within one row group at a time) and
only the wanted columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelrollout.cli.table import (
    Chunk,
    DataProblem,
    Floats,
    Rows,
    category_counts,
    pyarrow,
    require_columns,
    shown,
)

BATCH_ROWS = 65_536


class ParquetTable:
    """A Parquet file."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        self._arrow = pyarrow("Parquet", "pyarrow.parquet")
        try:
            self._file = self._arrow.parquet.ParquetFile(str(path))
        except (OSError, self._arrow.lib.ArrowException) as error:
            raise DataProblem(f"{self.name}: not a Parquet file: {error}") from None
        self.columns = tuple(str(n) for n in self._file.schema_arrow.names)

    def count_rows(self) -> int:
        return int(self._file.metadata.num_rows)

    def chunks(self, numeric: Sequence[str], categorical: Sequence[str]) -> Iterator[Chunk]:
        require_columns(self, [*numeric, *categorical])
        first_row = 0
        columns = list(dict.fromkeys([*numeric, *categorical]))
        for batch in self._file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            numbers = tuple(self._floats(batch.column(n), n, first_row) for n in numeric)
            categories = tuple(
                category_counts(self._no_nulls(batch.column(n), n, first_row)) for n in categorical
            )
            yield Chunk(numbers, categories, batch.num_rows)
            first_row += batch.num_rows

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        values = np.empty((rows.size, len(numeric)))
        first_row = done = 0
        for chunk in self.chunks(numeric, ()):
            end = int(np.searchsorted(rows, first_row + chunk.rows))
            for j, column in enumerate(chunk.numbers):
                values[done:end, j] = column[rows[done:end] - first_row]
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
                raise DataProblem(
                    f"{self.name}: column {name!r}, row {first_row + row + 1}: "
                    f"{shown(value)} is not a number"
                ) from None
        return numbers

    def _no_nulls(self, column: Any, name: str, first_row: int) -> Any:
        if column.null_count:
            row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
            raise DataProblem(
                f"{self.name}: column {name!r}, row {first_row + row + 1}: missing value"
            )
        return column
