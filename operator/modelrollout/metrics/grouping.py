"""One PromQL query for many rollouts: a template's per-rollout label matchers
opened into regexes, and every aggregation grouped by those labels, so a single
answer holds each rollout's result under its own label values.

The rewrite is offered only where it provably gives each rollout what its own query
would:
- every series selector pins the same labels by equality to the per-rollout values,
  and those values appear nowhere else;
- nothing drops, renames or overwrites those labels: no `without` or `ignoring` of
  them, no `on` without them, no label_replace, label_join, count_values into them,
  scalar or absent;
- both sides of a binary operation keep the same grouping labels, so grouping cannot
  make series match that did not;
- `vector()` only as `<one series> or vector(c)`: a rollout missing from the grouped
  answer is then asked its own query (`Plan.fills`), since only that says what the
  fill gives;
- the rewritten text parses back to the same query (the parser's printer loses
  escapes and empty subquery steps; such templates are asked once per rollout).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import promql_parser as promql

# Functions whose result may lose or rename the grouping labels, or that cannot be
# split by group: a template using them is asked once per rollout.
_UNGROUPABLE = frozenset({"label_replace", "label_join", "scalar", "absent", "absent_over_time"})
# Aggregations that pass their input series through, labels and all.
_SELECTING = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


class Ungroupable(Exception):
    """Why a template cannot be shared: it is then asked once per rollout."""


@dataclass(frozen=True)
class Plan:
    """How to ask one template for many rollouts and split the answer.

    `labels` pairs each grouping label with the sentinel standing for its
    per-rollout value. `dropped` are the grouping labels the rollout's own query
    would not carry, removed from its share. `fills` are the `vector(c)` of
    `<one series> or vector(c)`, as printed in `grouped`.
    """

    grouped: str
    labels: tuple[tuple[str, str], ...]
    dropped: frozenset[str]
    fills: tuple[str, ...] = ()

    def query(self, groups: Collection[tuple[str, ...]]) -> str:
        """The grouped query for these groups (label values in `labels` order): every
        value asked selected for each label, and each fill made once per group."""
        text = self.grouped
        for i, (label, sentinel) in enumerate(self.labels):
            asked = _alternation(group[i] for group in groups)
            text = text.replace(f'{label}="{sentinel}"', f"{label}=~{asked}")
        for fill in self.fills:
            text = text.replace(fill, "(" + " or ".join(self._fill(fill, g) for g in groups) + ")")
        return text

    def _fill(self, fill: str, group: tuple[str, ...]) -> str:
        """`vector(c)` labelled as one group: what its own `or vector(c)` gives it."""
        for (label, _), value in zip(self.labels, group, strict=True):
            # label_replace expands $1 in its replacement: a literal $ is $$
            fill = f'label_replace({fill}, "{label}", {_quoted(value.replace("$", "$$"))}, "", "")'
        return fill

    def group_of(self, metric: Mapping[str, str]) -> tuple[str, ...] | None:
        """The label values that say whose share a series is (None: nobody's)."""
        found = tuple(metric.get(label) for label, _ in self.labels)
        return None if None in found else found  # type: ignore[return-value]

    def share(self, metric: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in metric.items() if k not in self.dropped}


@functools.lru_cache(maxsize=512)
def plan(text: str, sentinels: frozenset[str]) -> Plan | None:
    """The plan for a query rendered with `sentinels` for its per-rollout values, or
    None when it cannot be shared (`why_not` says why)."""
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


def _parse(text: str) -> promql.Expr:
    try:
        return promql.parse(text)
    except ValueError as error:
        raise Ungroupable(f"not parsed: {error}") from None


def _plan(text: str, sentinels: frozenset[str]) -> Plan:
    expr = _parse(text)
    nodes = _nodes(expr)
    labels = _pinned(nodes, sentinels)
    if sum(text.count(s) for s in sentinels) != _pins(nodes, sentinels):
        raise Ungroupable("a per-rollout value appears outside a label matcher")
    grouping = frozenset(labels)
    for node in nodes:
        _check(node, grouping)
    fills = _check_vectors(expr, grouping)
    kept = _kept(expr, grouping)
    grouped = promql.transform(expr, post_visit=lambda node: _grouped(node, sorted(grouping)))
    text = str(grouped)
    if _signature(_parse(text)) != _signature(expr):
        raise Ungroupable("the rewritten query would not parse back to the same query")
    if text.count("vector(") != sum(text.count(fill) for fill in set(fills)):
        raise Ungroupable("a fill is not printed where it was parsed")
    return Plan(text, tuple(sorted(labels.items())), grouping - kept, tuple(sorted(set(fills))))


def _nodes(expr: promql.Expr) -> list[promql.Expr]:
    found: list[promql.Expr] = []

    def visit(node: promql.Expr) -> bool:
        found.append(node)
        return True

    promql.walk(expr, pre_visit=visit)
    return found


def _pinned(nodes: list[promql.Expr], sentinels: frozenset[str]) -> dict[str, str]:
    """Grouping label -> its sentinel, the same in every selector."""
    labels: dict[str, str] = {}
    pinned: list[frozenset[str]] = []
    for node in nodes:
        if not isinstance(node, promql.VectorSelector):
            continue
        mine: dict[str, str] = {}
        for matcher in node.matchers.matchers:
            if matcher.value not in sentinels:
                continue
            if matcher.op != promql.MatchOp.Equal:
                raise Ungroupable(f"{matcher.name} is matched by a regex or negation")
            if matcher.name == "__name__" or not _LABEL_NAME.fullmatch(matcher.name):
                raise Ungroupable(f"{matcher.name} cannot group an answer")
            if labels.setdefault(matcher.name, matcher.value) != matcher.value:
                raise Ungroupable(f"{matcher.name} takes two per-rollout values")
            mine[matcher.name] = matcher.value
        if node.matchers.or_matchers:
            raise Ungroupable("a selector has `or` matchers")
        pinned.append(frozenset(mine))
    if not labels:
        raise Ungroupable("no selector pins a per-rollout label")
    if any(selected != frozenset(labels) for selected in pinned):
        raise Ungroupable("not every selector pins the same per-rollout labels")
    return labels


def _pins(nodes: list[promql.Expr], sentinels: frozenset[str]) -> int:
    return sum(
        1
        for node in nodes
        if isinstance(node, promql.VectorSelector)
        for matcher in node.matchers.matchers
        if matcher.value in sentinels
    )


def _check(node: promql.Expr, grouping: frozenset[str]) -> None:
    if isinstance(node, promql.Call) and node.func.name in _UNGROUPABLE:
        raise Ungroupable(f"{node.func.name}() may drop the grouping labels")
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        without = modifier is not None and modifier.type == promql.AggModifierType.Without
        if without and modifier is not None and set(modifier.labels) & grouping:
            raise Ungroupable("an aggregation is without a per-rollout label")
        if isinstance(node.param, promql.StringLiteral) and node.param.val in grouping:
            raise Ungroupable("count_values() writes a per-rollout label")
    if isinstance(node, promql.SubqueryExpr) and node.step is None:
        raise Ungroupable("a subquery without a step")  # the printer drops its colon
    if isinstance(node, promql.BinaryExpr):
        _check_binary(node, grouping)


def _check_binary(node: promql.BinaryExpr, grouping: frozenset[str]) -> None:
    modifier = node.modifier
    fill = modifier.fill_values if modifier is not None else None
    if fill is not None and (fill.lhs is not None or fill.rhs is not None):
        raise Ungroupable("a binary operation fills missing sides")
    if not (_vector(node.lhs) and _vector(node.rhs)) or _is_vector_call(node.rhs):
        return
    # Grouping adds the labels to an aggregated side only: a side that never had
    # them, matched with one that has, would start matching.
    if _kept(node.lhs, grouping) != _kept(node.rhs, grouping):
        raise Ungroupable("the sides of a binary operation keep different per-rollout labels")
    matching = modifier.matching if modifier is not None else None
    if matching is None:
        return
    listed = set(matching.labels) & grouping
    if matching.type == promql.LabelModifierType.Exclude and listed:
        raise Ungroupable("a binary operation ignores a per-rollout label")
    if matching.type == promql.LabelModifierType.Include and listed != grouping:
        raise Ungroupable("a binary operation matches on() without the per-rollout labels")


def _check_vectors(node: promql.Expr, grouping: frozenset[str]) -> list[str]:
    """Refuse vector() except as `<labelless> or vector(c)`; those, as printed."""
    if isinstance(node, promql.BinaryExpr) and str(node.op) == "or" and _is_vector_call(node.rhs):
        if (
            _vector(node.lhs)
            and _kept(node.lhs, grouping) == frozenset()
            and not _labels_beyond(node.lhs, grouping)
        ):
            fill = node.rhs
            while isinstance(fill, promql.ParenExpr):
                fill = fill.expr
            assert isinstance(fill, promql.Call)
            if any(_vector(arg) for arg in fill.args):
                raise Ungroupable("vector() of series")
            return [*_check_vectors(node.lhs, grouping), str(fill)]
        raise Ungroupable("`or vector()` after series that keep labels")
    if _is_vector_call(node):
        raise Ungroupable("vector() outside `<one series> or vector(c)`")
    return [fill for child in _children(node) for fill in _check_vectors(child, grouping)]


def _is_vector_call(node: promql.Expr) -> bool:
    while isinstance(node, promql.ParenExpr):
        node = node.expr
    return isinstance(node, promql.Call) and node.func.name == "vector"


def _labels_beyond(node: promql.Expr, grouping: frozenset[str]) -> bool:
    """Whether the own query's series may carry labels besides the grouping ones:
    then `or vector(c)` adds its series beside them, and no share holds it."""
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        if str(node.op) in _SELECTING or (
            modifier is not None and modifier.type == promql.AggModifierType.Without
        ):
            return True
        return bool(modifier is not None and set(modifier.labels) - grouping)
    if isinstance(node, promql.ParenExpr | promql.UnaryExpr):
        return _labels_beyond(node.expr, grouping)
    if isinstance(node, promql.BinaryExpr):
        return any(_labels_beyond(side, grouping) for side in (node.lhs, node.rhs) if _vector(side))
    if isinstance(node, promql.Call) and node.func.name == "histogram_quantile":
        buckets = next(iter(_vector_args(node)), None)  # `le` goes; the rest stays
        while isinstance(buckets, promql.ParenExpr):
            buckets = buckets.expr
        modifier = buckets.modifier if isinstance(buckets, promql.AggregateExpr) else None
        if modifier is not None and modifier.type == promql.AggModifierType.By:
            return bool(set(modifier.labels) - grouping - {"le"})
    return True  # a selector, or a function of one: its own labels


def _children(node: promql.Expr) -> list[promql.Expr]:
    if isinstance(node, promql.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql.AggregateExpr | promql.ParenExpr | promql.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql.SubqueryExpr):
        return [node.expr]
    if isinstance(node, promql.Call):
        return list(node.args)
    return []


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
    return _parse(f"{node.op} by ({', '.join(by)}) ({param}{node.expr})")


def _kept(node: promql.Expr, grouping: frozenset[str]) -> frozenset[str]:
    """The grouping labels that the original query's series carry."""
    if isinstance(node, promql.VectorSelector | promql.MatrixSelector):
        return grouping
    if isinstance(node, promql.AggregateExpr):
        modifier = node.modifier
        if str(node.op) in _SELECTING:
            return _kept(node.expr, grouping)
        if modifier is None:
            return frozenset()
        if modifier.type == promql.AggModifierType.Without:
            return _kept(node.expr, grouping)
        return grouping & set(modifier.labels)
    if isinstance(node, promql.ParenExpr | promql.UnaryExpr | promql.SubqueryExpr):
        return _kept(node.expr, grouping)
    if isinstance(node, promql.Call):
        return frozenset().union(*(_kept(arg, grouping) for arg in _vector_args(node)))
    if isinstance(node, promql.BinaryExpr):
        # two vectors keep alike (checked); beside a number, the vector decides
        sides = [side for side in (node.lhs, node.rhs) if _vector(side)]
        return _kept(sides[0], grouping) if sides else frozenset()
    return frozenset()


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


def _signature(expr: promql.Expr) -> list[Any]:
    """What a query asks, less the grouping that the rewrite adds: equal for the
    original and its rewrite only if printing lost nothing."""
    out: list[Any] = []
    for node in _nodes(expr):
        if isinstance(node, promql.VectorSelector):
            matchers = [(m.name, str(m.op), m.value) for m in node.matchers.matchers]
            at = (str(node.at.type), node.at.at) if node.at is not None else None
            out.append(("selector", node.name, matchers, node.offset, at))
        elif isinstance(node, promql.MatrixSelector):
            out.append(("range", node.range))
        elif isinstance(node, promql.SubqueryExpr):
            at = (str(node.at.type), node.at.at) if node.at is not None else None
            out.append(("subquery", node.range, node.step, node.offset, at))
        elif isinstance(node, promql.NumberLiteral):
            out.append(("number", repr(node.val)))
        elif isinstance(node, promql.StringLiteral):
            out.append(("string", node.val))
        elif isinstance(node, promql.Call):
            out.append(("call", node.func.name, len(node.args)))
        elif isinstance(node, promql.AggregateExpr):
            out.append(("aggregate", str(node.op), repr(str(node.param))))
        elif isinstance(node, promql.BinaryExpr):
            modifier = node.modifier
            matching = modifier.matching if modifier is not None else None
            out.append(
                (
                    "binary",
                    str(node.op),
                    str(modifier.card) if modifier is not None else None,
                    modifier.return_bool if modifier is not None else None,
                    (str(matching.type), list(matching.labels)) if matching else None,
                    list(modifier.group_labels or []) if modifier is not None else None,
                )
            )
        else:
            out.append((type(node).__name__,))
    return out


def _alternation(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly these values, as a PromQL string."""
    return _quoted("|".join(_RE2_SPECIAL.sub(r"\\\1", v) for v in sorted(set(values))))


def _quoted(value: str) -> str:
    """A PromQL double-quoted string holding `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
