"""Query templating: `{{name}}` variables substituted into the user's PromQL.

Values come from the spec, and model versions are free text, so substitution must
never change the query's structure: a value is escaped for the string it lands in,
and free text may only land inside a double-quoted string (a label matcher), where
escaping makes it inert. Anywhere else it is refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

from modelrollout.ports import Shared

FREE_TEXT: frozenset[str] = frozenset({"stable.modelVersion", "candidate.modelVersion"})

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
# What a value may hold where no escaping applies: names, numbers and durations.
_BARE = re.compile(r"[A-Za-z0-9_.:-]*")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}


class UnknownVariable(ValueError):
    """A `{{name}}` that no variable answers: a typo in the query."""

    def __init__(self, name: str, known: Collection[str]) -> None:
        listed = ", ".join(sorted(known))
        super().__init__(f"unknown variable {{{{{name}}}}} in the query; known: {listed}")
        self.name = name


class UnsafeTemplate(ValueError):
    """A value placed where escaping cannot keep the query's structure intact."""


def render(
    template: str, variables: Mapping[str, str], free_text: Collection[str] = FREE_TEXT
) -> str:
    """Substitute every `{{name}}` (spaces inside the braces allowed), escaping each
    value for the PromQL string it lands in. Raise UnknownVariable or UnsafeTemplate."""
    return _substitute(template, variables, lambda n, v, c: _place(n, v, c, n in free_text))


def render_open(template: str, variables: Mapping[str, str]) -> Shared:
    """The template as rollouts share it: a sentinel in place of each value inside a
    string (a label matcher's, where one rollout differs from the next), with this
    rollout's values for them. Call after `render` has accepted the template."""
    values: dict[str, str] = {}

    def place(name: str, value: str, context: str | None) -> str:
        if context not in ('"', "'"):
            return _place(name, value, context, False)
        sentinel = f"__mro_{name.replace('.', '_')}__"
        values[sentinel] = value
        return sentinel

    return Shared(_substitute(template, variables, place), values)


def _substitute(
    template: str, variables: Mapping[str, str], place: Callable[[str, str, str | None], str]
) -> str:
    out: list[str] = []
    context: str | None = None  # the open quote (" ' `), "#" in a comment, or None
    i = 0
    while i < len(template):
        placeholder = _PLACEHOLDER.match(template, i)
        if placeholder:
            name = placeholder.group(1)
            if name not in variables:
                raise UnknownVariable(name, variables.keys())
            out.append(place(name, variables[name], context))
            i = placeholder.end()
            continue
        char = template[i]
        if context in ('"', "'") and char == "\\":
            out.append(template[i : i + 2])
            i += 2
            continue
        out.append(char)
        if context is None and char in "\"'`#":
            context = char
        elif char == context or (context == "#" and char == "\n"):
            context = None
        i += 1
    return "".join(out)


def _place(name: str, value: str, context: str | None, free: bool) -> str:
    if context in ('"', "'"):
        escapes = {**_ESCAPES, context: "\\" + context}
        return "".join(escapes.get(c, c) for c in value)
    if free:
        raise UnsafeTemplate(
            f"{{{{{name}}}}} is free text and must appear inside a double-quoted string, "
            f'as in model_version="{{{{{name}}}}}"'
        )
    if not _BARE.fullmatch(value):
        raise UnsafeTemplate(f"{{{{{name}}}}} outside a string holds {value!r}; quote it")
    return value
