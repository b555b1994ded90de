"""Parse a block of CSV lines into floats and category counts, vectorised with numpy.

np.loadtxt reads about five million fields a second: some ten seconds for one pass over
a million rows of fifty features. Here the separators locate every field at once, and
decimals.parse reads all numeric fields together; only what it cannot read exactly goes
through float() field by field.

Quotes around whole fields are dropped; a block where they hide a separator or escape
a quote goes through the csv module instead. A line break inside a quoted field is not
supported, as blocks end at line breaks.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from modelrollout.cli import decimals

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]

LONGEST_CATEGORY = 64  # longer categories are counted one by one
COMMA, NEWLINE, QUOTE = b',\n"'
_FRONT = bytes(decimals.FRONT_PADDING)  # lets a field's window reach back before the block
_BACK = bytes(LONGEST_CATEGORY)  # lets a category's window reach past the block


class FieldProblem(ValueError):
    """A field (or, with column -1, a whole line) that cannot be read."""

    def __init__(self, row: int, column: int, problem: str) -> None:
        super().__init__(problem)
        self.row, self.column, self.problem = row, column, problem


@dataclass(frozen=True)
class Block:
    numbers: Floats  # rows x numeric columns
    categories: tuple[dict[str, int], ...]  # counts per categorical column


def parse_block(
    data: bytes, columns: int, numeric: Sequence[int], categorical: Sequence[int]
) -> Block:
    """Read the numeric and categorical columns (header positions) of complete lines,
    each ending in a newline. Raises FieldProblem for the first bad field."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    chars = np.frombuffer(_FRONT + data + _BACK, dtype=np.uint8)
    quoted = QUOTE in data
    if quoted and not _simply_quoted(chars):
        return _parse_quoted(data, columns, numeric, categorical)
    starts, ends = _fields(chars, data, columns)
    if quoted:
        unquoted = _unquoted(chars, starts, ends)
        if unquoted is None:
            return _parse_quoted(data, columns, numeric, categorical)
        starts, ends = unquoted
    numbers = _numbers(chars, starts[:, numeric], ends[:, numeric], numeric)
    categories = tuple(_categories(chars, starts[:, c], ends[:, c], c) for c in categorical)
    return Block(numbers, categories)


def _fields(chars: NDArray[np.uint8], data: bytes, columns: int) -> tuple[Ints, Ints]:
    """Start and end (the separator's position) of every field, rows x columns."""
    separators = np.flatnonzero((chars == COMMA) | (chars == NEWLINE))
    newlines = chars[separators] == NEWLINE
    rows = int(np.count_nonzero(newlines))
    if separators.size != rows * columns or not newlines[columns - 1 :: columns].all():
        _raise_bad_line(data, columns)
    if rows == 0:
        return np.empty((0, columns), np.int64), np.empty((0, columns), np.int64)
    ends = separators.reshape(rows, columns)
    starts = np.empty_like(ends)
    starts.reshape(-1)[0] = len(_FRONT)
    starts.reshape(-1)[1:] = separators[:-1] + 1
    return starts, ends


def _simply_quoted(chars: NDArray[np.uint8]) -> bool:
    """Whether every quote opens or closes a field: none hides a separator (an even
    number of quotes before each) or is escaped as "" (next to another)."""
    quote = chars == QUOTE
    separator = (chars == COMMA) | (chars == NEWLINE)
    if np.any(quote[1:] & quote[:-1]):
        return False
    before = np.cumsum(quote, dtype=np.int32)
    return not np.any(before[separator] & 1)


def _unquoted(chars: NDArray[np.uint8], starts: Ints, ends: Ints) -> tuple[Ints, Ints] | None:
    """Fields without the quotes around them; None if a quote is anywhere else."""
    wrapped = (chars[starts] == QUOTE) & (chars[ends - 1] == QUOTE) & (ends - starts >= 2)
    if np.count_nonzero(chars == QUOTE) != 2 * np.count_nonzero(wrapped):
        return None
    return starts + wrapped, ends - wrapped


def _raise_bad_line(data: bytes, columns: int) -> None:
    for row, line in enumerate(data.split(b"\n")[:-1]):
        fields = line.count(b",") + 1
        if fields != columns:
            raise FieldProblem(row, -1, f"has {fields} fields; the header has {columns}")
    raise AssertionError("no line has the wrong number of fields")


def _numbers(chars: NDArray[np.uint8], starts: Ints, ends: Ints, numeric: Sequence[int]) -> Floats:
    shape = starts.shape
    starts, ends = starts.reshape(-1), ends.reshape(-1)
    values, readable = decimals.parse(chars, starts, ends)
    problems: dict[int, str] = {}
    for i in np.flatnonzero(~readable).tolist():
        text = chars[starts[i] : ends[i]].tobytes()
        number = _slow_number(text)
        if number is None:
            problems[i] = _describe(text)
        else:
            values[i] = number
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        text = chars[starts[i] : ends[i]].tobytes()
        problems.setdefault(i, f"{_shown(text)} is not a finite number")
    if problems:
        first = min(problems)  # row by row, so the earliest row's
        row, column = divmod(first, shape[1])
        raise FieldProblem(row, numeric[column], problems[first])
    return values.reshape(shape)


def _slow_number(text: bytes) -> float | None:
    stripped = text.strip()
    if not stripped or b"_" in stripped:  # float() takes 1_000; CSV readers don't
        return None
    try:
        return float(stripped)
    except ValueError:
        return None


def _describe(text: bytes) -> str:
    return "missing value" if not text.strip() else f"{_shown(text)} is not a number"


def _shown(text: bytes) -> str:
    value = text.decode("utf-8", errors="replace")
    return repr(value if len(value) <= 40 else value[:37] + "...")


def _categories(chars: NDArray[np.uint8], starts: Ints, ends: Ints, column: int) -> dict[str, int]:
    lengths = ends - starts
    if lengths.size and not lengths.all():
        raise FieldProblem(int(np.argmin(lengths)), column, "missing value")
    widest = int(lengths.max(initial=0))
    if widest > LONGEST_CATEGORY:
        found = Counter(chars[s:e].tobytes() for s, e in zip(starts, ends, strict=True))
        return {_text(k): n for k, n in found.items()}
    if widest == 0:
        return {}
    # Each field left-aligned in `widest` bytes, zero-padded: numpy's bytes type drops
    # the trailing zeros, so np.unique sees the field itself.
    padded = sliding_window_view(chars, widest)[starts]
    padded[np.arange(widest) >= lengths[:, None]] = 0
    values, counts = np.unique(padded.view(f"S{widest}").reshape(-1), return_counts=True)
    return {_text(v): int(n) for v, n in zip(values.tolist(), counts.tolist(), strict=True)}


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _parse_quoted(
    data: bytes, columns: int, numeric: Sequence[int], categorical: Sequence[int]
) -> Block:
    text = data.decode("utf-8", errors="replace")
    lines = list(csv.reader(io.StringIO(text, newline="")))
    numbers = np.empty((len(lines), len(numeric)))
    categories: list[Counter[str]] = [Counter() for _ in categorical]
    for row, fields in enumerate(lines):
        if len(fields) != columns:
            raise FieldProblem(row, -1, f"has {len(fields)} fields; the header has {columns}")
        for j, c in enumerate(numeric):
            raw = fields[c].encode()
            number = _slow_number(raw)
            if number is None:
                raise FieldProblem(row, c, _describe(raw))
            if not np.isfinite(number):
                raise FieldProblem(row, c, f"{_shown(raw)} is not a finite number")
            numbers[row, j] = number
        for j, c in enumerate(categorical):
            if not fields[c]:
                raise FieldProblem(row, c, "missing value")
            categories[j][fields[c]] += 1
    return Block(numbers, tuple(dict(c) for c in categories))
