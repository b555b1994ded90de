"""What both benchmarks stand on: the test bed's control plane with every CRD, the real
Prometheus, one exporter process, and our operator as a process under the chart's RBAC.

The operator runs as the tests run it (`python -m modelrollout`, see
tests/integration/conftest.py `Operator`), with MODELROLLOUT_ALLOWED_ADDRESSES=127.0.0.0/8.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from integration import objects
from testbed import ControlPlane, Prometheus, procs
from testbed.helm import helm_binary, service_account_rbac
from testbed.paths import ROOT

Obj = dict[str, Any]
ROLLOUTS = ("rollouts.mlops.io", "v1alpha1", "modelrollouts")
HTTPROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


def apply(cp: ControlPlane, manifests: Iterable[Obj], *args: str) -> None:
    """Server-side apply many manifests in one kubectl call."""
    docs = [yaml.safe_dump(m) for m in manifests]
    if docs:
        cp.apply("\n---\n".join(docs) + "\n", *args)


def held_rollout(
    name: str,
    stable: str,
    candidate: str,
    weight: int,
    analysis: Obj,
    prometheus_url: str,
    **spec: Any,
) -> Obj:
    """Our rollout of `candidate` on the HTTPRoute `name`, its first stage holding
    `weight` for 24h so that none finishes, `analysis` reading `prometheus_url`."""
    stages = [{"weight": weight, "duration": "24h"}, {"weight": 100, "duration": "1m"}]
    analysis = {**analysis, "prometheus": {"address": prometheus_url}}
    return objects.gateway_rollout(
        name, stable, candidate, strategy={"stages": stages}, analysis=analysis, **spec
    )


def namespace(cp: ControlPlane, name: str) -> None:
    apply(cp, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])


@dataclass
class Exporter:
    """`python -m testbed.exporter`: one process whose series every candidate shares."""

    port: int = field(default_factory=procs.free_port)
    proc: procs.Proc | None = None

    def start(self, lifetime: float, **config: Any) -> Exporter:
        self.proc = procs.spawn(
            "exporter",
            [sys.executable, "-m", "testbed.exporter", f"--port={self.port}",
             f"--lifetime={lifetime:.0f}"],
            env={"PYTHONPATH": str(ROOT / "tests")},
        )  # fmt: skip
        procs.wait_until(self._up, 30, "the exporter", self.proc)
        if config:
            self.configure(**config)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=2):
                return True
        except OSError:
            return False

    def configure(self, **config: Any) -> None:
        request = urllib.request.Request(
            f"http://{self.address}/config", data=json.dumps(config).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5):
            pass


@dataclass
class Operator:
    """Our operator as a process, under the chart's ServiceAccount and RBAC."""

    cp: ControlPlane
    namespaces: list[str]
    workdir: Path
    metrics_port: int = field(default_factory=procs.free_port)
    proc: procs.Proc | None = None

    def start(
        self, *args: str, env: dict[str, str] | None = None, module: str = "modelrollout"
    ) -> Operator:
        values = {"watchNamespaces": self.namespaces}
        manifests, _, account = service_account_rbac(helm_binary(), self.namespaces[0], values)
        self.cp.apply(manifests)
        user = f"system:serviceaccount:{self.namespaces[0]}:{account}"
        procs.wait_until(
            lambda: self.cp.kubectl(
                "auth", "can-i", "list", "modelrollouts.rollouts.mlops.io", f"--as={user}",
                "-n", self.namespaces[-1],
            ).strip() == "yes",
            20,
            "the chart's RBAC to reach the authorizer",
        )  # fmt: skip
        token = self.cp.kubectl(
            "create", "token", account, "-n", self.namespaces[0], "--duration=6h"
        ).strip()  # fmt: skip
        kubeconfig = self.cp.kubeconfig_for_token(token, self.workdir / "operator.kubeconfig")
        watch = [arg for ns in self.namespaces for arg in ("-n", ns)]
        self.proc = procs.spawn(
            "operator",
            [sys.executable, "-m", module, "--log-format", "json",
             "--metrics-port", str(self.metrics_port), *watch, *args],
            env={
                "KUBECONFIG": str(kubeconfig),
                "MODELROLLOUT_ALLOWED_ADDRESSES": "127.0.0.0/8",
                **(env or {}),
            },
        )  # fmt: skip
        return self

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
        return text


def start_testbed(
    stack: ExitStack,
    nodes: int = 3,
    configure_prometheus: Callable[[Prometheus], None] | None = None,
) -> tuple[ControlPlane, Prometheus]:
    """The control plane with Gateway API, Istio and our CRDs, and Prometheus (its
    config first changed by `configure_prometheus`); both stop when `stack` closes."""
    cp = ControlPlane(nodes=nodes)
    stack.callback(cp.stop)
    cp.start()
    cp.install_gateway_and_istio_crds()
    cp.install_crds(ROOT / "crds")
    prometheus = Prometheus()
    stack.callback(prometheus.close)
    if configure_prometheus is not None:
        configure_prometheus(prometheus)
    prometheus.start()
    return cp, prometheus


def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def wait(check: Any, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
