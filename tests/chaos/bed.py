"""The soak's own test bed: a control plane it may restart, Prometheus behind the TCP
proxy, the operator under the chart's ServiceAccount and RBAC, and one exporter per
candidate.

Why exporters (tests/testbed/exporter.py) rather than the end-to-end model servers and
traffic driver: a soak of 100 rollouts, 20 at a time, on two shared cores. An exporter
is one small process that simulates its own request stream and feature histograms, so
a rollout costs one process; the end-to-end stack costs a model server per Ready pod
plus the traffic driver, which would starve the operator being judged. What the soak
tests (when the operator moves weight, and on what evidence) depends only on what
Prometheus returns, which is real either way: a real Prometheus scraping real HTTP
processes on loopback.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import numpy as np
import yaml
from scipy.stats import norm

from integration.conftest import Operator, chart_service_account
from modelrollout.reference import Distribution, Reference, config_map
from testbed import ControlPlane, Prometheus, procs
from testbed.controlplane import exists
from testbed.helm import helm_binary
from testbed.paths import ROOT
from testbed.tcpproxy import TcpProxy

NAMESPACE = "chaos"
FEATURES = ("amount", "age")
REFERENCE = "training"
Spawn = Callable[..., procs.Proc]


def reference() -> Reference:
    """Decile edges of N(0, 1) for each feature, as the exporters draw by default."""
    deciles = norm.ppf(np.linspace(0.1, 0.9, 9))
    return Reference(
        samples=100_000,
        features=tuple(
            Distribution(name=n, edges=tuple(float(e) for e in deciles), proportions=(0.1,) * 10)
            for n in FEATURES
        ),
    )


@dataclass
class Models:
    """An exporter per candidate, standing in for its model server, scraped by Prometheus."""

    prometheus: Prometheus
    spawn: Spawn
    reference_file: Path
    ports: dict[str, int] = field(default_factory=dict)
    running: dict[str, procs.Proc] = field(default_factory=dict)

    def start(self, name: str, seed: int) -> None:
        port = procs.free_port()
        argv = [
            sys.executable, "-m", "testbed.exporter", "--port", str(port), "--seed", str(seed),
            "--reference", str(self.reference_file), "--feature-rps", "40",
            "--lifetime", "14400",
        ]  # fmt: skip
        self.running[name] = self.spawn(
            f"exporter-{name}", argv, env={"PYTHONPATH": str(ROOT / "tests")}
        )
        self.ports[name] = port
        self._targets()

    def configure(self, name: str, config: dict[str, Any], attempts: int = 5) -> None:
        """POST /config to the exporter (it may still be starting: retried)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[name]}/config",
            data=json.dumps(config).encode(),
            method="POST",
        )
        for attempt in range(attempts):
            try:
                urllib.request.urlopen(request, timeout=5).close()
                return
            except OSError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def stop(self, name: str) -> None:
        proc = self.running.pop(name, None)
        self.ports.pop(name, None)
        self._targets()
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def _targets(self) -> None:
        self.prometheus.set_targets(
            [
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"namespace": NAMESPACE, "deployment": f"{name}-v2"},
                }
                for name, port in self.ports.items()
            ]
        )


@dataclass
class Bed:
    control_plane: ControlPlane
    prometheus: Prometheus
    proxy: TcpProxy
    operator: Operator
    models: Models
    client: kubernetes.client.ApiClient

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.control_plane.etcd_port}"


@contextlib.contextmanager
def open_bed(workdir: Path, spawn: Spawn) -> Iterator[Bed]:
    """Everything started, and stopped again on the way out (also on failure)."""
    with contextlib.ExitStack() as stack:
        helm = helm_binary()
        control_plane = ControlPlane(workdir=workdir / "control-plane")
        stack.callback(control_plane.stop)
        control_plane.start()
        control_plane.install_gateway_and_istio_crds()
        control_plane.install_crds(ROOT / "crds")
        client = stack.enter_context(control_plane.api_client())
        _namespace(client)
        (workdir / "prometheus").mkdir(parents=True, exist_ok=True)
        prometheus = Prometheus(workdir / "prometheus")
        stack.callback(prometheus.close)
        prometheus.start()
        proxy = stack.enter_context(TcpProxy(prometheus.port))
        kubeconfig, _ = chart_service_account(control_plane, helm, [NAMESPACE], workdir)
        operator = Operator(control_plane, spawn, [NAMESPACE], kubeconfig)
        operator.start()
        stack.callback(lambda: operator.proc.stop())
        reference_file = workdir / "reference.yaml"
        reference_file.write_text(reference().to_yaml())
        control_plane.apply(yaml.safe_dump(config_map(REFERENCE, reference())), "-n", NAMESPACE)
        models = Models(prometheus, spawn, reference_file)
        stack.callback(models.stop_all)
        yield Bed(control_plane, prometheus, proxy, operator, models, client)


def _namespace(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace(kubernetes.client.V1Namespace(metadata={"name": NAMESPACE}))
    procs.wait_until(
        lambda: exists(lambda: core.read_namespaced_service_account("default", NAMESPACE)),
        60,
        f"ServiceAccount {NAMESPACE}/default (kube-controller-manager)",
    )
