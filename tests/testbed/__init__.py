"""Test bed: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) and Prometheus, as processes for tests and `make cluster-up`.

Importable as `testbed` (pytest's pythonpath includes tests/); run `python -m testbed`
with PYTHONPATH=tests for the detached cluster.
"""

from testbed.binaries import ensure_binaries, ensure_crds
from testbed.controlplane import ControlPlane
from testbed.paths import MissingPrerequisite, in_ci
from testbed.procs import Proc, free_port, spawn, stop, tail
from testbed.prometheus import Prometheus

__all__ = [
    "ControlPlane",
    "MissingPrerequisite",
    "Proc",
    "Prometheus",
    "ensure_binaries",
    "ensure_crds",
    "free_port",
    "in_ci",
    "spawn",
    "stop",
    "tail",
]
