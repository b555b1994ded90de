"""Where the test bed keeps things, and checks for the tools it needs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
LOG_DIR = CACHE / "logs"
CRD_CACHE = CACHE / "crds"
CLUSTER_DIR = CACHE / "cluster"
TESTBIN = ROOT / "hack" / "testbin"


class MissingPrerequisite(RuntimeError):
    """A tool the test bed needs is absent; fixtures skip on it unless CI=true."""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str, env_var: str | None = None, hint: str = "") -> str:
    """Absolute path of `name` (or of $env_var if set), else MissingPrerequisite."""
    candidate = os.environ.get(env_var, "") if env_var else ""
    found = shutil.which(candidate or name)
    if not found:
        where = f" (${env_var}={candidate})" if candidate else " on PATH"
        raise MissingPrerequisite(f"{candidate or name} not found{where}. {hint}".strip())
    return found
