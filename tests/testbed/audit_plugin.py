"""pytest plugin (`pytest -p testbed.audit_plugin`): a run audited for the
least-privilege check. With $TESTBED_AUDIT_DIR set it empties that folder before the
first control plane starts and, at the end, writes there what ran (`session.json`):
`testbed.rbac_audit` compares only after a whole suite ran and passed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from testbed.audit import SESSION, audit_dir

_deselected = pytest.StashKey[int]()


def _controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # pytest-xdist workers have it


def pytest_configure(config: pytest.Config) -> None:
    folder = audit_dir()
    if folder is None or not _controller(config):
        return
    shutil.rmtree(folder, ignore_errors=True)  # before any worker starts its control plane
    folder.mkdir(parents=True)
    config.stash[_deselected] = 0


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        config = items[0].config
        config.stash[_deselected] = config.stash.get(_deselected, 0) + len(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    folder = audit_dir()
    config = session.config
    if folder is None or not _controller(config):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", {})
    rootdir = Path(str(config.rootpath))
    summary = {
        "args": [os.path.relpath(Path(a).resolve(), rootdir) for a in config.args],
        "exitstatus": int(exitstatus),
        "collected": session.testscollected,
        "deselected": config.stash.get(_deselected, 0),
        "keyword": config.getoption("keyword", ""),
        "markexpr": config.getoption("markexpr", ""),
        "passed": len(stats.get("passed", [])),
        "skipped": len(stats.get("skipped", [])),
        "failed": len(stats.get("failed", [])) + len(stats.get("error", [])),
    }
    (folder / SESSION).write_text(json.dumps(summary, indent=1))
