"""CSV files with a header row, read by pyarrow's streaming reader a block at a time.

Only the wanted columns are converted: numeric ones to float64, categorical ones as
bytes. An empty field is a missing value. When pyarrow refuses a value, or one is
missing or not finite, the rows from that block on are read again as text on one
thread, to name the first bad field's column and row. Rows are lines (a line break
inside a quoted field is not supported), which is how `sample` finds its rows.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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

# pyarrow's block: a chunk's rows. pyarrow parses dozens of blocks ahead of us, so the
# block size sets the memory: 1 MB keeps a pass within 250 MB, 4 MB takes 350.
BLOCK_BYTES = 1 << 20
SCAN_BYTES = 1 << 23  # reads of the raw file, to count and find lines
NEWLINE = ord("\n")
Source = str | bytes  # a path, or the header and some lines in memory
RowOf = Callable[[int], int]  # a source's row index to the file's


class CsvTable:
    """A CSV file with a header row."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        self._arrow = pyarrow("CSV", "pyarrow.csv")
        with path.open("rb") as file:
            header = file.readline()
        self._header = header if header.endswith(b"\n") else header + b"\n"
        text = header.decode("utf-8-sig", errors="replace").rstrip("\r\n")
        self.columns = tuple(c.strip() for c in next(csv.reader([text]), []))
        if not self.columns:
            raise DataProblem(f"{self.name}: empty file, expected a header row")
        repeated = sorted(n for n, k in Counter(self.columns).items() if k > 1)
        if repeated:
            raise DataProblem(f"{self.name}: the header repeats {', '.join(repeated)}")

    def count_rows(self) -> int:
        """Lines after the header; bytes.count needs no parsing."""
        rows, last_line = 0, b""
        with self.path.open("rb") as file:
            file.seek(len(self._header.rstrip(b"\n")) + 1)
            while read := file.read(SCAN_BYTES):
                rows += read.count(b"\n")
                cut = read.rfind(b"\n") + 1
                last_line = read[cut:] if cut else last_line + read
        return rows + bool(last_line.strip())

    def chunks(self, numeric: Sequence[str], categorical: Sequence[str]) -> Iterator[Chunk]:
        require_columns(self, [*numeric, *categorical])
        return self._chunks(str(self.path), numeric, categorical, lambda row: row)

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        require_columns(self, numeric)
        values = np.empty((rows.size, len(numeric)))
        done = 0
        for chunk in self._chunks(self._lines(rows), numeric, (), lambda row: int(rows[row])):
            for j, column in enumerate(chunk.numbers):
                values[done : done + chunk.rows, j] = column
            done += chunk.rows
        return values

    def _lines(self, rows: Rows) -> bytes:
        """The header and the lines of these rows, found by their line breaks."""
        picked, first_row, done, rest = [self._header], 0, 0, b""
        with self.path.open("rb") as file:
            file.seek(len(self._header.rstrip(b"\n")) + 1)
            while read := file.read(SCAN_BYTES):
                data = rest + read
                ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)
                stop = int(np.searchsorted(rows, first_row + ends.size))
                local = rows[done:stop] - first_row
                starts = np.concatenate(([0], ends[:-1] + 1))[local].tolist()
                lines = zip(starts, ends[local].tolist(), strict=True)
                picked += [data[start : end + 1] for start, end in lines]
                rest = data[ends[-1] + 1 :] if ends.size else data
                first_row, done = first_row + ends.size, stop
        if done < rows.size and rows[done] == first_row and rest.strip():
            picked.append(rest + b"\n")  # the last line, without a line break
        return b"".join(picked)

    def _chunks(
        self, source: Source, numeric: Sequence[str], categorical: Sequence[str], row_of: RowOf
    ) -> Iterator[Chunk]:
        first, refused = 0, ""
        try:
            for batch in self._open(source, numeric, categorical, text=False):
                chunk = _chunk(batch, numeric, categorical)
                if chunk is None:
                    break
                yield chunk
                first += batch.num_rows
            else:
                return
        except self._arrow.ArrowInvalid as error:
            refused = str(error)
        raise self._locate(source, first, numeric, categorical, row_of, refused)

    def _open(
        self,
        source: Source,
        numeric: Sequence[str],
        categorical: Sequence[str],
        text: bool,
        skip: int = 0,
        bad_row: Callable[[Any], str] | None = None,
    ) -> Any:
        """pyarrow's streaming reader; `text` reads every column as bytes on one thread,
        for `_locate`, so that pyarrow numbers bad rows."""
        arrow = self._arrow
        as_bytes = arrow.binary()
        types = {n: as_bytes if text else arrow.float64() for n in numeric}
        types |= dict.fromkeys(categorical, as_bytes)
        return arrow.csv.open_csv(
            source if isinstance(source, str) else arrow.BufferReader(source),
            read_options=arrow.csv.ReadOptions(
                column_names=list(self.columns),
                skip_rows=1,
                skip_rows_after_names=skip,
                use_threads=not text,
                block_size=BLOCK_BYTES,
            ),
            parse_options=arrow.csv.ParseOptions(
                ignore_empty_lines=False, invalid_row_handler=bad_row
            ),
            convert_options=arrow.csv.ConvertOptions(
                include_columns=list(types),
                column_types=types,
                null_values=[] if text else [""],
                strings_can_be_null=not text,
                quoted_strings_can_be_null=not text,
            ),
        )

    def _locate(
        self,
        source: Source,
        first: int,
        numeric: Sequence[str],
        categorical: Sequence[str],
        row_of: RowOf,
        refused: str,
    ) -> DataProblem:
        """The first bad field from row `first` on, as text, or the row with the wrong
        number of fields."""
        bad_rows: list[Any] = []

        def bad_row(row: Any) -> str:
            bad_rows.append(row)
            return "error"

        try:
            reader = self._open(source, numeric, categorical, True, first, bad_row)
            for batch in reader:
                found = _first_problem(batch, numeric, categorical)
                if found is not None:
                    row, column, problem = found
                    where = _place(row_of(first + row))
                    return DataProblem(f"{self.name}: column {column!r}, {where}: {problem}")
                first += batch.num_rows
        except self._arrow.ArrowInvalid as error:
            if bad_rows and bad_rows[0].number is not None:
                bad = bad_rows[0]
                where = _place(row_of(bad.number - 2))  # line 1 is the header
                return DataProblem(
                    f"{self.name}: {where} has {bad.actual_columns} fields; "
                    f"the header has {bad.expected_columns}"
                )
            refused = refused or str(error)
        return DataProblem(f"{self.name}: {refused or 'unreadable'}")


def _place(row: int) -> str:
    return f"row {row + 1} (line {row + 2})"


def _chunk(batch: Any, numeric: Sequence[str], categorical: Sequence[str]) -> Chunk | None:
    """The batch's columns, or None if a value is missing or not finite."""
    numbers = []
    for name in numeric:
        column = batch.column(name)
        values: Floats = column.to_numpy()
        if column.null_count or not np.isfinite(values).all():
            return None
        numbers.append(values)
    categories = []
    for name in categorical:
        column = batch.column(name)
        if column.null_count:
            return None
        categories.append(category_counts(column))
    return Chunk(tuple(numbers), tuple(categories), batch.num_rows)


def _first_problem(
    batch: Any, numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[int, str, str] | None:
    """(row, column, problem) of the earliest bad field; numeric columns first in a row."""
    found: tuple[int, str, str] | None = None
    for name in [*numeric, *categorical]:
        check = _number_problem if name in numeric else _category_problem
        for row, value in enumerate(batch.column(name).to_pylist()[: found[0] if found else None]):
            problem = check(value)
            if problem is not None:
                found = (row, name, problem)
                break
    return found


def _number_problem(value: bytes) -> str | None:
    """As pyarrow reads numbers: ASCII only, surrounding blanks allowed, no "1_000"."""
    text = value.strip()
    if not text:
        return "missing value"
    try:
        if not text.isascii() or b"_" in text:
            raise ValueError
        number = float(text)
    except ValueError:
        return f"{shown(value)} is not a number"
    return None if math.isfinite(number) else f"{shown(value)} is not a finite number"


def _category_problem(value: bytes) -> str | None:
    return None if value else "missing value"
