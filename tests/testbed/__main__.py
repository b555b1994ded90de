"""`python -m testbed up|down|status`: a detached control plane for `make cluster-up`.

State (pids, ports, paths) lives in .cache/cluster/state.json; the kubeconfig is
.cache/kubeconfig. `up` is idempotent and prints the kubeconfig path last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from testbed import procs
from testbed.controlplane import ControlPlane
from testbed.paths import CACHE, CLUSTER_DIR, LOG_DIR, ROOT

STATE = CLUSTER_DIR / "state.json"
KUBECONFIG = CACHE / "kubeconfig"


def _attached() -> ControlPlane | None:
    if not STATE.exists():
        return None
    return ControlPlane.attach(json.loads(STATE.read_text()))


def up() -> None:
    cp = _attached()
    if cp is not None and cp.ready():
        print(f"already running at {cp.server}", file=sys.stderr)
        print(cp.kubeconfig)
        return
    down()
    CLUSTER_DIR.mkdir(parents=True)
    cp = ControlPlane(workdir=CLUSTER_DIR, kubeconfig=KUBECONFIG, detached=True, log_id="cluster")
    try:
        cp.start()
        STATE.write_text(json.dumps(cp.state(), indent=2))
        cp.install_gateway_and_istio_crds()
        crds = ROOT / "crds"
        if any(crds.glob("*.yaml")):
            cp.install_crds(crds)
    except BaseException:
        cp.stop()  # whatever start() spawned before failing, even if state.json lacks it
        down()
        raise
    print(f"control plane at {cp.server}; logs in {LOG_DIR}", file=sys.stderr)
    print(cp.kubeconfig)


def down() -> None:
    cp = _attached()
    if cp is not None:
        for proc in reversed(cp.procs):
            procs.stop_pid(proc.pid)
    shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    KUBECONFIG.unlink(missing_ok=True)


def status() -> int:
    cp = _attached()
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
