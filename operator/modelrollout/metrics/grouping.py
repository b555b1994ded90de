"""One PromQL query for many rollouts: a template's per-rollout label matchers
opened into regexes, and every aggregation grouped by those labels, so a single
answer holds each rollout's result under its own label values.

The rewrite is offered only where it provably gives each rollout what its own query
would: every series selector pins the same labels by equality to the per-rollout
values, nothing can drop or rename those labels (no `without` or `ignoring` of them,
no `on` without them, no label_replace, label_join, scalar or absent), and the
values appear nowhere else. A rollout whose labels are missing from the grouped
answer is asked its own query when the expression can make series without them
(`or vector(0)`), since only its own query says what that fills in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import promql_parser as promql

# Functions whose result may lose or rename the grouping labels, or that cannot be
# split by group: a template using them is asked once per rollout.
_UNGROUPABLE = frozenset({"label_replace", "label_join", "scalar", "absent", "absent_over_time"})
# Functions that make series with no labels.
_UNLABELLED = frozenset({"vector"})
# Aggregations that pass their input series through, labels and all.
_SELECTING = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


class Ungroupable(Exception):
    """Why a template cannot be shared: it is then asked once per rollout."""


@dataclass(frozen=True)
class Plan:
    """How to ask one template for many rollouts and split the answer.

    `labels` maps each grouping label to the sentinel standing for its per-rollout
    value. `strip` says the rollout's own query would not carry those labels, so
    they are removed from its share; `fills` says a missing share must be asked
    for itself.
    """

    grouped: str
    labels: Mapping[str, str]
    strip: bool
    fills: bool

    def query(self, values: Mapping[str, Collection[str]]) -> str:
        """The grouped query selecting every value asked for each label."""
        text = self.grouped
        for label, sentinel in self.labels.items():
            text = text.replace(f'{label}="{sentinel}"', f"{label}=~{_alternation(values[label])}")
        return text

    def group_of(self, metric: Mapping[str, str]) -> tuple[str, ...] | None:
        """The label values that say whose share a series is (None: nobody's)."""
        found = tuple(metric.get(label) for label in self.labels)
        return None if None in found else found  # type: ignore[return-value]

    def share(self, metric: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in metric.items() if not (self.strip and k in self.labels)}


@functools.lru_cache(maxsize=512)
def plan(text: str, sentinels: frozenset[str]) -> Plan | None:
    """The plan for a query rendered with `sentinels` for its per-rollout values, or
    None when it cannot be shared (see Ungroupable for why, in `why_not`)."""
    try:
        return _plan(text, sentinels)
    except Ungroupable:
        return None


def why_not(text: str, sentinels: frozenset[str]) -> str | None:
    try:
        _plan(text, sentinels)
    except Ungroupable as reason:
        return str(reason)
    return None


def _plan(text: str, sentinels: frozenset[str]) -> Plan:
    try:
        expr = promql.parse(text)
    except ValueError as error:
        raise Ungroupable(f"not parsed: {error}") from None
    labels: dict[str, str] = {}
    pinned: list[frozenset[str]] = []
    fills = False

    def visit(node: promql.Expr) -> bool:
        nonlocal fills
        if isinstance(node, promql.VectorSelector):
            mine = {m.name: m.value for m in node.matchers.matchers if m.value in sentinels}
            for matcher in node.matchers.matchers:
                if matcher.value in sentinels and matcher.op != promql.MatchOp.Equal:
                    raise Ungroupable(f"{matcher.name} is matched by a regex or negation")
            for label, sentinel in mine.items():
                if labels.setdefault(label, sentinel) != sentinel:
                    raise Ungroupable(f"{label} takes two per-rollout values")
            pinned.append(frozenset(mine))
        elif isinstance(node, promql.Call):
            if node.func.name in _UNGROUPABLE:
                raise Ungroupable(f"{node.func.name}() may drop the grouping labels")
            fills = fills or node.func.name in _UNLABELLED
        elif isinstance(node, promql.StringLiteral) and any(s in node.val for s in sentinels):
            raise Ungroupable("a per-rollout value is used as a string")
        return True

    promql.walk(expr, pre_visit=visit)
    if not labels:
        raise Ungroupable("no selector pins a per-rollout label")
    if any(selected != frozenset(labels) for selected in pinned):
        raise Ungroupable("not every selector pins the same per-rollout labels")
    if sum(text.count(s) for s in sentinels) != len(pinned) * len(labels):
        raise Ungroupable("a per-rollout value appears outside a label matcher")
    grouping = sorted(labels)
    for node in _nodes(expr):
        _check_matching(node, grouping)
    grouped = promql.transform(expr, post_visit=lambda node: _grouped(node, grouping))
    return Plan(str(grouped), labels, not _keeps(expr, grouping), fills)


def _nodes(expr: promql.Expr) -> list[promql.Expr]:
    found: list[promql.Expr] = []

    def visit(node: promql.Expr) -> bool:
        found.append(node)
        return True

    promql.walk(expr, pre_visit=visit)
    return found


def _check_matching(node: promql.Expr, grouping: list[str]) -> None:
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        without = modifier.labels if modifier is not None else []
        if modifier is not None and modifier.type != promql.AggModifierType.Without:
            without = []
        if set(without) & set(grouping):
            raise Ungroupable("an aggregation is without a per-rollout label")
    if isinstance(node, promql.BinaryExpr) and _vector(node.lhs) and _vector(node.rhs):
        # Grouping adds the labels to an aggregated side only: a side that never had
        # them, matched with one that has, would start matching.
        if _keeps(node.lhs, grouping) != _keeps(node.rhs, grouping):
            raise Ungroupable("one side of a binary operation is aggregated, the other not")
        matching = node.modifier.matching if node.modifier is not None else None
        if matching is None:
            return
        listed = set(matching.labels) & set(grouping)
        if matching.type == promql.LabelModifierType.Exclude and listed:
            raise Ungroupable("a binary operation ignores a per-rollout label")
        if matching.type == promql.LabelModifierType.Include and listed != set(grouping):
            raise Ungroupable("a binary operation matches on() without the per-rollout labels")


def _grouped(node: promql.Expr, grouping: list[str]) -> promql.Expr | None:
    """An aggregation by the grouping labels too; the parser's nodes are immutable,
    so the replacement is parsed from its text."""
    if not isinstance(node, promql.AggregateExpr):
        return None
    modifier = node.modifier
    if modifier is not None and modifier.type == promql.AggModifierType.Without:
        return None
    by = list(modifier.labels) if modifier is not None else []
    by += [label for label in grouping if label not in by]
    param = f"{node.param}, " if node.param is not None else ""
    return promql.parse(f"{node.op} by ({', '.join(by)}) ({param}{node.expr})")


def _keeps(node: promql.Expr, grouping: list[str]) -> bool:
    """Whether the original query's series carry the grouping labels."""
    if isinstance(node, promql.VectorSelector | promql.MatrixSelector):
        return True
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        if str(node.op) in _SELECTING:
            return _keeps(node.expr, grouping)
        if modifier is None:
            return False
        if modifier.type == promql.AggModifierType.Without:
            return _keeps(node.expr, grouping)
        return set(grouping) <= set(modifier.labels)
    if isinstance(node, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
        return _keeps(node.expr, grouping)
    if isinstance(node, promql.Call):
        return any(_keeps(arg, grouping) for arg in _vector_args(node))
    if isinstance(node, promql.BinaryExpr):
        # Two vectors keep alike (checked); with a number, the vector decides.
        return _keeps(node.lhs, grouping) or _keeps(node.rhs, grouping)
    return False


def _vector_args(call: promql.Call) -> Iterable[promql.Expr]:
    return (arg for arg in call.args if _vector(arg))


def _vector(node: promql.Expr) -> bool:
    """Whether `node` evaluates to series (not a number or a string)."""
    if isinstance(node, promql.NumberLiteral | promql.StringLiteral):
        return False
    if isinstance(node, promql.ParenExpr | promql.UnaryExpr):
        return _vector(node.expr)
    if isinstance(node, promql.BinaryExpr):
        return _vector(node.lhs) or _vector(node.rhs)
    if isinstance(node, promql.Call):
        return node.func.return_type in (promql.ValueType.Vector, promql.ValueType.Matrix)
    return True


def _alternation(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these values, as a PromQL string."""
    joined = "|".join(_RE2_SPECIAL.sub(r"\\\1", v) for v in sorted(set(values)))
    escaped = joined.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
