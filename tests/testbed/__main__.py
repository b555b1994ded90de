"""`python -m testbed up|down|status`: a detached control plane for `make cluster-up`.

State (pids, ports, paths) lives in .cache/cluster/state.json; the kubeconfig is
.cache/kubeconfig. `up` is idempotent and prints the kubeconfig path last. It applies
the demo seed (manifests/demo/) only when it starts a fresh cluster: on a running one
the operator may own the demo route's weights by now, and the seed must not take them
back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from testbed import procs
from testbed.controlplane import ControlPlane
from testbed.paths import CACHE, CLUSTER_DIR, LOG_DIR, ROOT

KUBECONFIG = CACHE / "kubeconfig"
DEMO_SEED = ROOT / "manifests" / "demo"


def _attached(home: Path) -> ControlPlane | None:
    state = home / "state.json"
    if not state.exists():
        return None
    return ControlPlane.attach(json.loads(state.read_text()))


def up(home: Path = CLUSTER_DIR, kubeconfig: Path = KUBECONFIG, seed: Path = DEMO_SEED) -> bool:
    """Start the cluster unless it runs; True when it was started (and seeded)."""
    cp = _attached(home)
    if cp is not None and cp.ready():
        print(f"already running at {cp.server}", file=sys.stderr)
        print(cp.kubeconfig)
        return False
    down(home, kubeconfig)
    home.mkdir(parents=True)
    cp = ControlPlane(workdir=home, kubeconfig=kubeconfig, detached=True, log_id="cluster")
    try:
        cp.start()
        (home / "state.json").write_text(json.dumps(cp.state(), indent=2))
        cp.install_gateway_and_istio_crds()
        crds = ROOT / "crds"
        if any(crds.glob("*.yaml")):
            cp.install_crds(crds)
        cp.apply(seed)
    except BaseException:
        cp.stop()  # whatever start() spawned before failing, even if state.json lacks it
        down(home, kubeconfig)
        raise
    print(f"control plane at {cp.server}; logs in {LOG_DIR}", file=sys.stderr)
    print(cp.kubeconfig)
    return True


def down(home: Path = CLUSTER_DIR, kubeconfig: Path = KUBECONFIG) -> None:
    cp = _attached(home)
    if cp is not None:
        for proc in reversed(cp.procs):
            procs.stop_pid(proc.pid)
    shutil.rmtree(home, ignore_errors=True)
    kubeconfig.unlink(missing_ok=True)


def status() -> int:
    cp = _attached(CLUSTER_DIR)
    if cp is None:
        print("not running")
        return 1
    for p in cp.procs:
        print(f"{p.name:15} pid {p.pid:<8} {'running' if p.alive() else 'DEAD':8} log {p.log}")
    print(f"{'kube-apiserver':15} {cp.server} {'ready' if cp.ready() else 'NOT READY'}")
    print(f"kubeconfig      {cp.kubeconfig}")
    return 0 if cp.ready() else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    command = parser.parse_args().command
    if command == "up":
        up()
    elif command == "down":
        down()
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
