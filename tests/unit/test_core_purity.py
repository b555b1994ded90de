"""The decision core imports no I/O library, and the controller decides nothing.

Two checkable rules:
- `core/` imports only the standard library, numpy, scipy, pydantic, and our own
  `core` and `api`: every decision is testable offline.
- `controller/` holds no condition about where a rollout stands. No test of an
  `if`, `while`, conditional expression, `assert`, comprehension filter or `match`
  in it may mention a name, attribute or string containing "phase", "stage" or
  "verdict", nor a string that is a phase or a verdict value. Such a question is a
  decision: it belongs in `core/`, which the controller calls by a name saying what
  it asks (`analysis_due(spec, status)`, `release_target(status)`).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

from modelrollout.api.status import DriftVerdict, Phase, Verdict
from modelrollout.core.types import JudgementVerdict

PACKAGE = Path(__file__).parents[2] / "operator" / "modelrollout"
CORE, CONTROLLER = PACKAGE / "core", PACKAGE / "controller"
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "pydantic"}
ALLOWED_OWN = ("modelrollout.core", "modelrollout.api")
DECISION_WORDS = re.compile(r"phase|stage|verdict", re.IGNORECASE)
DECISION_VALUES = {
    *get_args(Phase),
    *get_args(Verdict),
    *get_args(DriftVerdict),
    *get_args(JudgementVerdict),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_imports_only_stdlib_numeric_libraries_and_the_api() -> None:
    offenders = {}
    for path in sorted(CORE.glob("*.py")):
        bad = {
            name
            for name in _imports(path)
            if not (
                name.split(".")[0] in sys.stdlib_module_names
                or name.split(".")[0] in ALLOWED_THIRD_PARTY
                or name.startswith(ALLOWED_OWN)
                or name == "__future__"
            )
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_purity_check_catches_an_offender(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import kopf\nfrom kubernetes import client\n")
    assert _imports(module) == {"kopf", "kubernetes"}


def _conditions(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While | ast.IfExp | ast.Assert):
            yield node.test
        elif isinstance(node, ast.comprehension):
            yield from node.ifs
        elif isinstance(node, ast.Match):
            yield node.subject


def decisions(source: str) -> list[str]:
    """Every condition in `source` that asks where a rollout stands."""
    found = []
    for condition in _conditions(ast.parse(source)):
        for node in ast.walk(condition):
            words = []
            if isinstance(node, ast.Name):
                words.append(node.id)
            elif isinstance(node, ast.Attribute):
                words.append(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.append(node.value)
                if node.value in DECISION_VALUES:
                    found.append(ast.unparse(condition))
            if any(DECISION_WORDS.search(word) for word in words):
                found.append(ast.unparse(condition))
    return sorted(set(found))


def test_the_controller_branches_on_no_phase_stage_or_verdict() -> None:
    offenders = {
        path.name: found
        for path in sorted(CONTROLLER.glob("*.py"))
        if (found := decisions(path.read_text()))
    }
    assert offenders == {}


def test_the_decision_check_catches_every_form() -> None:
    caught = {
        "if status.phase == 'Paused': pass": ["status.phase == 'Paused'"],
        "x = 1 if s['stage'] else 2": ["s['stage']"],
        "while judgement.verdict != 'pass': pass": ["judgement.verdict != 'pass'"],
        "ok = [m for m in ms if m.verdict]": ["m.verdict"],
        "assert phase": ["phase"],
        "if reason in TERMINAL_PHASES: pass": ["reason in TERMINAL_PHASES"],
        "if text == 'RolledBack': pass": ["text == 'RolledBack'"],
    }
    for source, expected in caught.items():
        assert decisions(source) == expected, source
    assert decisions("if analysis_due(spec, status): pass") == []
    assert decisions("if route is None: pass") == []
