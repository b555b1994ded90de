"""CSV files with a header row, read in blocks of whole lines, parsed in parallel."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np

from modelrollout.cli.csvblock import FieldProblem, parse_block
from modelrollout.cli.table import Chunk, DataProblem, Floats, Rows, T, require_columns

BLOCK_BYTES = 1 << 20  # big enough to amortise numpy's per-call cost, small enough to cache
COUNT_BLOCK_BYTES = 1 << 23
WORKERS = 2  # numpy releases the GIL in its loops, so blocks parse in parallel


class CsvTable:
    """A CSV file with a header row, read in blocks of whole lines."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.name
        with path.open("rb") as file:
            header = file.readline()
        self._data_start = len(header)
        text = header.decode("utf-8-sig", errors="replace").rstrip("\r\n")
        self.columns = tuple(c.strip() for c in next(csv.reader([text]), []))
        if not self.columns:
            raise DataProblem(f"{self.name}: empty file, expected a header row")
        repeated = sorted(n for n, k in Counter(self.columns).items() if k > 1)
        if repeated:
            raise DataProblem(f"{self.name}: the header repeats {', '.join(repeated)}")

    def count_rows(self) -> int:
        rows, last_line = 0, b""
        with self.path.open("rb") as file:
            file.seek(self._data_start)
            while read := file.read(COUNT_BLOCK_BYTES):
                rows += newlines(read)
                cut = read.rfind(b"\n") + 1
                last_line = read[cut:] if cut else last_line + read
        return rows + bool(last_line.strip())

    def map_chunks(
        self, numeric: Sequence[str], categorical: Sequence[str], work: Callable[[Chunk], T]
    ) -> Iterator[T]:
        positions = self._positions(numeric, categorical)

        def parse(first_row: int, block: bytes) -> T:
            return work(self._parse(first_row, block, *positions))

        with ThreadPoolExecutor(WORKERS) as pool:
            yield from _ordered(pool, parse, self._blocks())

    def sample(self, numeric: Sequence[str], rows: Rows) -> Floats:
        numeric_at, _ = self._positions(numeric, ())

        def pick(first_row: int, block: bytes) -> tuple[Rows, Floats]:
            within = np.searchsorted(rows, [first_row, first_row + newlines(block)])
            wanted = rows[within[0] : within[1]]
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
            starts = np.concatenate(([0], ends[:-1] + 1))
            local = wanted - first_row
            lines = zip(starts[local].tolist(), ends[local].tolist(), strict=True)
            try:
                picked = parse_block(b"".join(block[s : e + 1] for s, e in lines), *columns)
            except FieldProblem as problem:
                raise DataProblem(self._where(int(wanted[problem.row]), problem)) from None
            return wanted, picked.numbers

        columns = (len(self.columns), numeric_at, ())
        values = np.empty((rows.size, len(numeric)))
        done = 0
        with ThreadPoolExecutor(WORKERS) as pool:
            for wanted, numbers in _ordered(pool, pick, self._blocks()):
                values[done : done + wanted.size] = numbers
                done += wanted.size
        return values

    def _positions(
        self, numeric: Sequence[str], categorical: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        require_columns(self, [*numeric, *categorical])
        return [self.columns.index(n) for n in numeric], [
            self.columns.index(n) for n in categorical
        ]

    def _parse(
        self, first_row: int, block: bytes, numeric: list[int], categorical: list[int]
    ) -> Chunk:
        try:
            parsed = parse_block(block, len(self.columns), numeric, categorical)
        except FieldProblem as problem:
            raise DataProblem(self._where(first_row + problem.row, problem)) from None
        return Chunk(parsed.numbers, parsed.categories)

    def _where(self, row: int, problem: FieldProblem) -> str:
        place = f"row {row + 1} (line {row + 2})"
        if problem.column < 0:
            return f"{self.name}: {place} {problem.problem}"
        return f"{self.name}: column {self.columns[problem.column]!r}, {place}: {problem.problem}"

    def _blocks(self) -> Iterator[tuple[int, bytes]]:
        """(index of the first row, whole lines each ending in a newline)."""
        row, rest = 0, b""
        with self.path.open("rb") as file:
            file.seek(self._data_start)
            while read := file.read(BLOCK_BYTES):
                data = rest + read
                cut = data.rfind(b"\n") + 1
                block, rest = data[:cut], data[cut:]
                if block:
                    yield row, block
                    row += newlines(block)
        if rest.strip():
            yield row, rest + b"\n"


def newlines(data: bytes) -> int:
    """How many; numpy counts a few times faster than bytes.count."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n")))


def _ordered(
    pool: ThreadPoolExecutor, work: Callable[[int, bytes], T], blocks: Iterator[tuple[int, bytes]]
) -> Iterator[T]:
    """`work` on each block in the pool, results in order, a few blocks ahead at most."""
    pending = [pool.submit(work, *b) for b in islice(blocks, 2 * WORKERS)]
    while pending:
        result = pending.pop(0).result()
        pending.extend(pool.submit(work, *b) for b in islice(blocks, 1))
        yield result
