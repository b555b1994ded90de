"""The operator's API requests, recorded by kube-apiserver's audit log, for the
least-privilege check (`testbed.rbac_audit`, `make rbac-audit`).

Opt-in: with $TESTBED_AUDIT_DIR set,
- every control plane's kube-apiserver writes an audit log there (`apiserver-*.log`),
  at level Metadata and for ServiceAccounts only (kube-controller-manager's, in
  kube-system, left out): who did which verb on which resource, never a body;
- every time the test bed installs the chart's ServiceAccount and RBAC, it records the
  release, the account and the rendered manifests (`rbac/<release>.json`), so the
  check compares each account's requests with exactly what the chart granted it;
- the pytest plugin `testbed.audit_plugin` (`pytest -p testbed.audit_plugin`, as
  `make integration` and `make e2e` run) empties the folder first and writes
  `session.json` last, which says whether the whole suite ran and passed: the check
  trusts only such a run, never one test file or a `-k` selection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

ENV = "TESTBED_AUDIT_DIR"
SESSION = "session.json"

POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request, when it is answered (a watch: when it ends).
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def audit_dir() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def apiserver_flags(workdir: Path, port: int) -> list[str]:
    """kube-apiserver flags that write its audit log under $TESTBED_AUDIT_DIR, if set."""
    folder = audit_dir()
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    log = folder / f"apiserver-{os.getpid()}-{port}.log"
    return [f"--audit-policy-file={policy}", f"--audit-log-path={log}"]


def record_rbac(release: str, namespace: str, account: str, values: Any, manifests: str) -> None:
    """Keep the RBAC the chart rendered for `account`, if auditing."""
    folder = audit_dir()
    if folder is None:
        return
    (folder / "rbac").mkdir(parents=True, exist_ok=True)
    record = {
        "release": release,
        "user": f"system:serviceaccount:{namespace}:{account}",
        "values": values,
        "manifests": manifests,
    }
    (folder / "rbac" / f"{release}.json").write_text(json.dumps(record, indent=1))
