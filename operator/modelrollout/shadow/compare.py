"""Whether the candidate's answer agrees with the stable's, on the paths the user chose.

Pure: two response bodies in, a verdict out. A rule is `JSONPATH[~TOLERANCE]`: the
path (RFC 9535, by python-jsonpath in strict mode) selects the same nodes in both
answers; numbers agree when |a - b| <= TOLERANCE (exactly, without one), anything else
when equal. The nodes a path selects are compared as a list, in order, so `$.scores`
and `$.scores[*]` both compare a whole batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import jsonpath

# RFC 9535 as written: no python-jsonpath extensions, so a path means what the standard says.
_PATHS = jsonpath.JSONPathEnvironment(strict=True)

Result = Literal["match", "mismatch", "uncompared"]


class BadRule(ValueError):
    """A --compare value that is not `JSONPATH[~TOLERANCE]`."""


@dataclass(frozen=True)
class Rule:
    text: str  # as the user wrote it, for messages
    path: jsonpath.JSONPath
    tolerance: float | None  # None: numbers must be equal

    def select(self, document: Any) -> list[Any]:
        """The values the path selects in a parsed JSON document."""
        if isinstance(document, str):
            # python-jsonpath would parse a str argument as JSON text once more; a
            # string document has no members, so only the root path selects anything.
            return [document] if not self.path.segments else []
        return list(self.path.findall(document))


def parse_rule(text: str) -> Rule:
    """`$.score~0.001` (numbers within 0.001), `$.label` (exact), `$` (the whole answer)."""
    text = text.strip()
    path_text, tolerance = text, None
    head, tilde, tail = text.rpartition("~")
    if tilde:
        try:
            tolerance = float(tail)
        except ValueError:
            tolerance = None  # maybe a '~' inside the path itself: the parser decides
        else:
            if not math.isfinite(tolerance) or tolerance < 0:
                raise BadRule(f"{text!r}: the tolerance must be a finite number >= 0")
            path_text = head.strip()
    if not path_text:
        raise BadRule(f"{text!r}: expected JSONPATH[~TOLERANCE], e.g. $.score~0.001")
    try:
        path = _PATHS.compile(path_text)
    except jsonpath.JSONPathError as error:
        hint = " (a tolerance is a number after '~')" if tilde and tolerance is None else ""
        raise BadRule(f"{text!r}: not a JSONPath{hint}: {_first_line(error)}") from error
    if not isinstance(path, jsonpath.JSONPath):  # a union (`|`) of paths: not RFC 9535
        raise BadRule(f"{text!r}: one JSONPath per rule")
    return Rule(text, path, tolerance)


@dataclass(frozen=True)
class Verdict:
    result: Result
    # For "uncompared": stable_not_json or stable_no_paths (a bounded label value).
    # For "mismatch": the first rule that disagreed and why (for logs, not labels).
    detail: str = ""


def expected_values(rules: tuple[Rule, ...], stable: bytes) -> list[list[Any]] | str:
    """What each rule selects in the stable's 2xx answer, or why it cannot be compared:
    `stable_not_json`, or `stable_no_paths` when no rule selects anything (counting such
    pairs as matches would inflate the match rate with answers nobody looked at)."""
    try:
        document = _parse(stable)
    except ValueError:
        return "stable_not_json"
    selected = [rule.select(document) for rule in rules]
    return selected if any(selected) else "stable_no_paths"


def compare(rules: tuple[Rule, ...], expected: list[list[Any]], candidate: bytes) -> Verdict:
    """The candidate's 2xx answer against the stable's selected values. An answer that
    is not JSON is a mismatch: the candidate answered, and not what the stable did."""
    try:
        document = _parse(candidate)
    except ValueError as error:
        return Verdict("mismatch", f"the candidate's answer is not JSON: {error}")
    for rule, values in zip(rules, expected, strict=True):
        got = rule.select(document)
        if not agree(values, got, rule.tolerance):
            detail = f"{rule.text}: stable {_short(values)}, candidate {_short(got)}"
            return Verdict("mismatch", detail)
    return Verdict("match")


def judge(rules: tuple[Rule, ...], stable: bytes, candidate: bytes) -> Verdict:
    """Two 2xx answers' bodies compared on `rules`."""
    expected = expected_values(rules, stable)
    if isinstance(expected, str):
        return Verdict("uncompared", expected)
    return compare(rules, expected, candidate)


def agree(a: Any, b: Any, tolerance: float | None) -> bool:
    """JSON values equal, numbers (at any depth) within `tolerance`. Types are strict:
    true is not 1, "1" is not 1; 1 and 1.0 are the same JSON number."""
    if _is_number(a) and _is_number(b):
        if a == b:
            return True
        if tolerance is None:
            return False
        try:
            return bool(abs(a - b) <= tolerance)
        except OverflowError:  # integers beyond float range that differ
            return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(agree(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(agree(a[k], b[k], tolerance) for k in a)
    if _is_number(a) or _is_number(b) or type(a) is not type(b):
        return False
    return bool(a == b)  # str, bool, None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse(body: bytes) -> Any:
    """JSON from bytes (UTF-8, -16 or -32, as RFC 8259 allows); ValueError if it is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # bad UTF-8, huge ints, deep nesting too
        raise ValueError(_first_line(error)) from error


def _short(values: list[Any], limit: int = 120) -> str:
    text = json.dumps(values[0] if len(values) == 1 else values, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
