"""Decimal numbers in a byte buffer to floats, many at once, exactly as float() reads them.

Each field is read as two or three 64-bit words, its last 16 or 24 characters before
any exponent, and all fields go through the same integer arithmetic together: the
digits become a mantissa m (up to 19 digits, below 2**64), the point and the exponent a
power of ten p.

The float is then m * 10**p correctly rounded, the one float() gives:
- m <= 2**53 and |p| <= 22: both are exact doubles, and one multiplication or division
  rounds once (Clinger's fast path). Rounded data ("%.6g", money, counts) is all here.
- larger m (repr's 17 digits, savetxt's 19), |p| <= 27: the product in x87 extended
  precision (64-bit mantissa, where numpy's longdouble is that), rounded to a double.
  Rounding twice errs only when the first result lies exactly halfway between two
  doubles, its low 11 bits 10000000000; those few fields go through float(), as does
  everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Words = NDArray[np.uint64]
Flags = NDArray[np.bool_]

MAX_WORDS = 3
MAX_DIGITS = 19  # below 2**64
FRONT_PADDING = 8 * MAX_WORDS + 8  # bytes the buffer needs before its first field
LITTLE_ENDIAN = np.dtype("<u8")  # the digit arithmetic wants a field's first byte lowest
MINUS, PLUS, ZERO, LOWER_E = b"-+0e"

_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ABOVE_NINE = np.uint64(0x7676767676767676)  # a byte + 0x76 sets bit 7 when byte > 9
_POINT_DIGIT = np.uint64(0x1E1E1E1E1E1E1E1E)  # "." ^ "0" in every byte
_BYTE_SUM = np.uint64(0x0101010101010101)
_BYTE_RANK = np.uint64(0x0807060504030201)
_BYTE = np.uint64(8)
_TOP_BYTE = np.uint64(56)
_EXACT_DOUBLE = np.uint64(2**53)
_POW10 = np.array([10.0**k for k in range(23)])
_X87 = np.finfo(np.longdouble).nmant == 63 and np.dtype(np.longdouble).itemsize == 16
_HALFWAY_BITS, _HALFWAY = np.uint64(0x7FF), np.uint64(0x400)  # the 11 bits a double drops


def _extended_powers() -> NDArray[np.longdouble]:
    powers = [np.longdouble(1)]
    for _ in range(27):
        powers.append(powers[-1] * np.longdouble(10))  # 5**27 < 2**64: all exact
    return np.array(powers, dtype=np.longdouble)


_POW10_EXTENDED = _extended_powers()


@dataclass(frozen=True)
class _Masks:
    """For a window of `words` words: indexed by the mantissa's length, its bytes in the
    right-aligned window and their "0"s; indexed by the point's column (the window's
    width for none), the bytes up to the point."""

    field: Words
    zeros: Words
    up_to_point: Words

    @staticmethod
    def of(words: int) -> _Masks:
        width = 8 * words
        field = np.zeros((width + 1, width), dtype=np.uint8)
        up_to = np.zeros((width + 1, width), dtype=np.uint8)
        for n in range(width + 1):
            field[n, width - n :] = 0xFF
            up_to[n, : n + 1] = 0xFF if n < width else 0
        zeros = field & np.uint8(ZERO)
        return _Masks(_by_word(field), _by_word(zeros), _by_word(up_to))


def _by_word(table: NDArray[np.uint8]) -> Words:
    """Rows of bytes as rows of words, transposed: one contiguous row per word."""
    return np.ascontiguousarray(table.view(LITTLE_ENDIAN).T)


_MASKS = {words: _Masks.of(words) for words in (2, MAX_WORDS)}


def parse(chars: NDArray[np.uint8], starts: Ints, ends: Ints) -> tuple[Floats, Flags]:
    """The fields chars[starts[i]:ends[i]] as floats, and which of them were read;
    the rest are for float(). chars needs FRONT_PADDING bytes before the first field,
    and the fields must be in order."""
    if not starts.size:
        return np.zeros(0), np.ones(0, dtype=bool)
    first = chars[starts]
    negative = first == MINUS
    body = starts + (negative | (first == PLUS))
    exponent, mantissa_end, readable = _exponents(chars, body, ends)
    length = mantissa_end - body
    words = 2 if length.max(initial=0) <= 16 else MAX_WORDS
    mantissa, decimals, plain = _mantissas(chars, mantissa_end, length, words)
    values, exact = _scaled(mantissa, exponent - decimals)
    return np.where(negative, -values, values), readable & plain & exact


def _mantissas(
    chars: NDArray[np.uint8], mantissa_end: Ints, length: Ints, words: int
) -> tuple[Words, Ints, Flags]:
    """Mantissas as integers, their digits after the point, and which are plain (digits
    and at most one point, 1 to 19 digits)."""
    width, masks = 8 * words, _MASKS[words]
    fit = np.clip(length, 0, width)
    words_at = np.ndarray(chars.size - 7, LITTLE_ENDIAN, chars.data, strides=(1,))
    digits = [
        _Digits.of(
            (np.take(words_at, mantissa_end - width + 8 * w) & np.take(masks.field[w], fit))
            ^ np.take(masks.zeros[w], fit)
        )
        for w in range(words)
    ]
    points, decimals = np.zeros_like(length), np.zeros_like(length)
    plain = (length >= 1) & (length <= width)
    for w, d in enumerate(digits):
        points += d.points
        decimals += np.where(d.point_rank > 0, d.point_rank - 1 + 8 * (words - 1 - w), 0)
        plain &= d.plain
    plain &= (points <= 1) & (length - points >= 1) & (length - points <= MAX_DIGITS)
    point_column = np.where(points > 0, width - 1 - decimals, width)
    # The bytes before the point move one place right, over it; then each word's eight
    # digits combine, and the words in turn.
    mantissa = np.zeros(length.shape, dtype=np.uint64)
    carried = np.zeros(length.shape, dtype=np.uint64)
    for w, d in enumerate(digits):
        shifted = (d.digits << _BYTE) | carried
        carried = d.digits >> _TOP_BYTE
        moved = np.take(masks.up_to_point[w], point_column, mode="clip")
        merged = (shifted & moved) | (d.digits & ~moved)
        mantissa = mantissa * np.uint64(10**8) + _eight_digits(merged)
    return mantissa, decimals, plain


@dataclass(frozen=True)
class _Digits:
    """One word of a mantissa: digit values 0..9 with any point as 0."""

    digits: Words
    point_rank: Ints  # 8 - the point's byte in the word; 0 without a point
    points: Ints
    plain: Flags  # nothing but digits and points

    @staticmethod
    def of(word: Words) -> _Digits:
        above_nine = (((word & _LOW7) + _ABOVE_NINE) | word) & _HIGH
        marked = word ^ _POINT_DIGIT
        point_bits = ~(((marked & _LOW7) + _LOW7) | marked) & _HIGH  # bit 7 of each "."
        ones = point_bits >> np.uint64(7)
        return _Digits(
            word & ~(ones * np.uint64(0xFF)),
            ((ones * _BYTE_RANK) >> _TOP_BYTE).astype(np.int64),
            ((ones * _BYTE_SUM) >> _TOP_BYTE).astype(np.int64),
            above_nine == point_bits,
        )


def _eight_digits(words: Words) -> Words:
    """The number eight digit bytes (0..9, the first digit lowest) spell."""
    words = (words * np.uint64(10) + (words >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    words = (words * np.uint64(100) + (words >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (words * np.uint64(10000) + (words >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


def _exponents(chars: NDArray[np.uint8], body: Ints, ends: Ints) -> tuple[Ints, Ints, Flags]:
    """Each field's exponent (e5, E-07, e+308: one to three digits, 0 without), where
    its mantissa ends, and whether the exponent reads. `ends` must ascend."""
    # Every "e" in the buffer, matched to the field it falls in, if any: with the
    # fields in order, the first field ending after it.
    e_found = np.flatnonzero((chars | np.uint8(0x20)) == LOWER_E)
    field = np.minimum(np.searchsorted(ends, e_found), ends.size - 1)
    inside = (e_found > body[field]) & (e_found < ends[field])
    e_at = np.full(ends.shape, -1, dtype=np.int64)
    e_at[field[inside]] = e_found[inside]  # with two, one stays where a digit must be
    exponent = np.zeros(ends.shape, dtype=np.int64)
    readable = np.ones(ends.shape, dtype=bool)
    found = np.flatnonzero(e_at >= 0)
    if not found.size:
        return exponent, ends, readable
    at, end = e_at[found], ends[found]
    sign = chars[at + 1]
    negative = sign == MINUS
    start = at + 1 + (negative | (sign == PLUS))
    length = end - start
    ok = (length >= 1) & (length <= 3)
    value = np.zeros(found.shape, dtype=np.int64)
    for place in range(3):
        digit = chars[end - 1 - place] - np.uint8(ZERO)
        inside = place < length
        ok &= ~inside | (digit <= 9)
        value += np.where(inside, digit, 0).astype(np.int64) * 10**place
    exponent[found] = np.where(negative, -value, value)
    readable[found] = ok
    return exponent, np.where(e_at >= 0, e_at, ends), readable


def _scaled(mantissa: Words, power: Ints) -> tuple[Floats, Flags]:
    """mantissa * 10**power correctly rounded, and where that was done exactly."""
    size = np.abs(power)
    exact = (mantissa <= _EXACT_DOUBLE) & (size <= 22)
    scale = np.take(_POW10, np.minimum(size, 22))
    as_double = mantissa.astype(np.float64)
    values = np.where(power >= 0, as_double * scale, as_double / scale)
    wide = np.flatnonzero(~exact & (size <= 27))
    if _X87 and wide.size:
        m = mantissa[wide].astype(np.longdouble)
        scale_extended = _POW10_EXTENDED[size[wide]]
        up = power[wide] >= 0
        product = np.divide(m, scale_extended, where=~up, out=np.empty_like(m))
        np.multiply(m, scale_extended, where=up, out=product)
        # The x87 format's first eight bytes are its 64-bit significand.
        significand = product.view(np.uint64).reshape(wide.size, -1)[:, 0]
        values[wide] = product.astype(np.float64)
        exact[wide] = (significand & _HALFWAY_BITS) != _HALFWAY
    return values, exact
