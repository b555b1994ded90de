"""Flagger and Argo Rollouts in the test bed, built from their Go modules.

Each peer is built by hack/peers/build.sh from hack/peers/<peer>/go.mod; its CRDs and its
RBAC come from the same module version (the YAML ships inside the module zip). Each runs
out of cluster as a process with a kubeconfig holding the token of its own
ServiceAccount, bound only in its own namespace with the rules the peer ships, and
watches only that namespace: the peers never see each other's objects.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testbed import procs
from testbed.binaries import _module_dir
from testbed.controlplane import ControlPlane
from testbed.paths import CRD_CACHE, ROOT, require_tool

PEERS_DIR = ROOT / "hack" / "peers"
Obj = dict[str, Any]


class PeerBuildError(RuntimeError):
    """A peer did not build from its module; the message holds the build's own error."""


@dataclass(frozen=True)
class Peer:
    name: str  # folder under hack/peers/
    module: str
    binary: str
    crds: tuple[str, ...]  # globs inside the module
    rbac: str  # the peer's own RBAC manifest inside the module

    @property
    def version(self) -> str:
        """The version pinned in hack/peers/<name>/go.mod."""
        text = (PEERS_DIR / self.name / "go.mod").read_text()
        found = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)} (v\S+)", text, re.M)
        if not found:
            raise RuntimeError(f"hack/peers/{self.name}/go.mod does not require {self.module}")
        return found.group(1)


FLAGGER = Peer(
    "flagger",
    "github.com/fluxcd/flagger",
    "flagger",
    ("artifacts/flagger/crd.yaml",),
    "artifacts/flagger/account.yaml",
)
ARGO_ROLLOUTS = Peer(
    "argo-rollouts",
    "github.com/argoproj/argo-rollouts",
    "rollouts-controller",
    ("manifests/crds/*-crd.yaml",),
    "manifests/namespace-install.yaml",
)


@functools.cache
def binary(peer: Peer) -> Path:
    """Build the peer (minutes the first time, cached under .cache/peers/<key>/)."""
    require_tool("go", hint=f"Go builds {peer.name} (hack/peers/build.sh).")
    result = subprocess.run(
        [str(PEERS_DIR / "build.sh"), peer.name], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise PeerBuildError(f"hack/peers/build.sh {peer.name} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1]) / peer.binary


def crd_folder(peer: Peer) -> Path:
    """The peer's CRDs from its module at the pinned version, in .cache/crds/<name>/."""
    folder = CRD_CACHE / peer.name
    stamp = folder / ".version"
    wanted = f"{peer.module}@{peer.version}"
    if stamp.exists() and stamp.read_text() == wanted:
        return folder
    source = _module_dir(peer.module, peer.version)
    files = sorted(f for pattern in peer.crds for f in source.glob(pattern))
    if not files:
        raise RuntimeError(f"{wanted} has none of {peer.crds}")
    CRD_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{peer.name}.", dir=CRD_CACHE))
    for f in files:
        (staging / f.name).write_bytes(f.read_bytes())
    (staging / ".version").write_text(wanted)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:  # another process put it there first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def install_crds(cp: ControlPlane, *peers: Peer) -> None:
    for peer in peers:
        cp.install_crds(crd_folder(peer))


def namespaced_rbac(peer: Peer, namespace: str) -> tuple[list[Obj], str]:
    """The peer's shipped ServiceAccount and rules, bound in `namespace` only:
    a ClusterRole's rules become a Role of the same name (their cluster-scoped rules,
    which a Role cannot grant, are dropped). Returns (manifests, ServiceAccount name)."""
    text = (_module_dir(peer.module, peer.version) / peer.rbac).read_text()
    out: list[Obj] = []
    account = ""
    rules: list[Obj] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        kind = doc["kind"]
        if kind == "ServiceAccount":
            account = doc["metadata"]["name"]
            out.append(_in(doc, namespace))
        elif kind in ("Role", "ClusterRole") and not doc["metadata"]["name"].startswith(
            "argo-rollouts-aggregate"
        ):  # Argo Rollouts' aggregate roles are for its users, not the controller
            rules.extend(doc.get("rules") or [])
    if not account or not rules:
        raise RuntimeError(f"{peer.rbac} in {peer.module} has no ServiceAccount or rules")
    role = f"{peer.name}-controller"
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": namespace},
            "rules": [r for r in rules if "nonResourceURLs" not in r],
        }
    )
    out.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        }
    )
    return out, account


def _in(doc: Obj, namespace: str) -> Obj:
    return {**doc, "metadata": {**doc["metadata"], "namespace": namespace}}


def service_account_kubeconfig(cp: ControlPlane, peer: Peer, namespace: str, workdir: Path) -> Path:
    """Install the peer's RBAC in `namespace`; a kubeconfig with its ServiceAccount's token."""
    manifests, account = namespaced_rbac(peer, namespace)
    cp.apply("\n---\n".join(yaml.safe_dump(m) for m in manifests) + "\n")
    token = cp.kubectl(
        "create", "token", account, "-n", namespace, "--duration=6h"
    ).strip()  # fmt: skip
    return cp.kubeconfig_for_token(token, workdir / f"{peer.name}-{namespace}.kubeconfig")


def start_flagger(
    cp: ControlPlane,
    namespace: str,
    prometheus_url: str,
    workdir: Path,
    *,
    log_id: str | None = None,
) -> procs.Proc:
    """Flagger with its Gateway API provider (gatewayapi:v1), watching `namespace`."""
    kubeconfig = service_account_kubeconfig(cp, FLAGGER, namespace, workdir)
    port = procs.free_port()
    return procs.spawn(
        "flagger",
        [
            binary(FLAGGER),
            f"-kubeconfig={kubeconfig}",
            f"-namespace={namespace}",
            "-mesh-provider=gatewayapi:v1",
            f"-metrics-server={prometheus_url}",
            f"-port={port}",
            "-log-level=info",
        ],
        log_id=log_id,
    )


def start_argo_rollouts(
    cp: ControlPlane, namespace: str, workdir: Path, *, log_id: str | None = None
) -> procs.Proc:
    """Argo Rollouts' controller in namespaced mode, watching `namespace`."""
    kubeconfig = service_account_kubeconfig(cp, ARGO_ROLLOUTS, namespace, workdir)
    return procs.spawn(
        "argo-rollouts",
        [
            binary(ARGO_ROLLOUTS),
            f"--kubeconfig={kubeconfig}",
            f"--namespace={namespace}",
            "--namespaced",
            f"--metricsPort={procs.free_port()}",
            f"--healthzPort={procs.free_port()}",
            "--leader-elect=false",
        ],
        # where it reads its ConfigMap; in a pod the downward API sets it
        env={"POD_NAMESPACE": namespace},
        log_id=log_id,
    )
