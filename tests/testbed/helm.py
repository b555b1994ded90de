"""helm, built from hack/helm/go.mod (or $HELM_BIN), and the chart rendered with it.

The test bed runs the operator under the ServiceAccount and RBAC the chart installs,
so the permissions users get are the permissions every test proves sufficient.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from typing import Any

import yaml

from testbed.audit import record_rbac
from testbed.paths import ROOT, MissingPrerequisite, require_tool

CHART = ROOT / "charts" / "modelrollout-operator"
HELM_BUILD = ROOT / "hack" / "helm" / "build.sh"
Obj = dict[str, Any]


@functools.cache
def helm_binary() -> str:
    """Build helm (minutes the first time, cached after) or take $HELM_BIN."""
    if not os.environ.get("HELM_BIN"):
        require_tool("go", hint="Go builds helm (hack/helm/build.sh); or set HELM_BIN.")
    result = subprocess.run([str(HELM_BUILD)], capture_output=True, text=True)
    if result.returncode != 0:
        raise MissingPrerequisite(f"hack/helm/build.sh failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def template(
    helm: str,
    values: Obj | None = None,
    *args: str,
    release: str = "mro",
    namespace: str = "default",
) -> subprocess.CompletedProcess[str]:
    argv = [helm, "template", release, str(CHART), "--namespace", namespace, "--values", "-"]
    return subprocess.run(
        [*argv, *args], input=yaml.safe_dump(values or {}), capture_output=True, text=True
    )


def render(helm: str, values: Obj | None = None, *args: str, **kw: str) -> str:
    result = template(helm, values, *args, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr}")
    return result.stdout


def rbac_templates(values: Obj) -> list[str]:
    """`--show-only` arguments for every template holding the operator's Roles and
    ClusterRoles with `values`: rbac.yaml, and the Lease's Role in leaderElection mode."""
    shown = ["--show-only", "templates/rbac.yaml"]
    if (values.get("highAvailability") or {}).get("mode") == "leaderElection":
        shown += ["--show-only", "templates/leader-election.yaml"]
    return shown


def service_account_rbac(
    helm: str, namespace: str, values: Obj, release: str | None = None
) -> tuple[str, str, str]:
    """The chart's ServiceAccount and RBAC in `namespace`, with the peering objects in
    peering mode: (manifests, release, ServiceAccount name)."""
    release = release or f"r{uuid.uuid4().hex[:6]}"
    shown = ["--show-only", "templates/serviceaccount.yaml", *rbac_templates(values)]
    mode = (values.get("highAvailability") or {}).get("mode")
    if mode == "peering":
        shown += ["--show-only", "templates/peering.yaml"]
    manifests = render(helm, values, *shown, release=release, namespace=namespace)
    account = f"{release}-modelrollout-operator"
    record_rbac(release, namespace, account, values, manifests)  # if $TESTBED_AUDIT_DIR
    return manifests, release, account
