"""The decision core imports no I/O library: every decision is testable offline."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).parents[2] / "operator" / "modelrollout" / "core"
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "pydantic"}
ALLOWED_OWN = ("modelrollout.core", "modelrollout.api")


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
