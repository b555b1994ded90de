"""The test bed's data plane on the real control plane and Prometheus: a model server
per Ready pod (testbed.backends), scraped with its pod's labels, and traffic split as
the routing objects say (testbed.traffic), with the split measured by Prometheus."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from testbed import ControlPlane, Prometheus, procs
from testbed.backends import Backends
from testbed.paths import ROOT
from testbed.procs import Spawn
from testbed.prometheus import values
from testbed.traffic import Route, TrafficDriver

from . import objects
from .conftest import Api

RPS = 50.0
WINDOW = 8.0  # seconds of traffic per measured share: 400 requests
Manifest = dict[str, Any]
Drive = Callable[..., TrafficDriver]


def model(name: str, app: str, replicas: int, **template_annotations: str) -> Manifest:
    """A Deployment whose pods carry the version label, as the e2e manifests do."""
    version = name.rsplit("-", 1)[-1]
    return objects.deployment(
        name, replicas, version, app=app, version_label="model.mlops.io/version",
        annotations=template_annotations,
    )  # fmt: skip


def service(name: str, **selector: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def backend_refs(weights: dict[str, int]) -> list[Manifest]:
    return [{"name": name, "port": 80, "weight": w} for name, w in weights.items()]


@pytest.fixture
def backends(
    k8s: kubernetes.client.ApiClient, namespace: str, prometheus: Prometheus
) -> Iterator[Backends]:
    with Backends(k8s, [namespace], targets=prometheus.set_targets) as supervisor:
        yield supervisor


@pytest.fixture
def drive(k8s: kubernetes.client.ApiClient, namespace: str, backends: Backends) -> Iterator[Drive]:
    drivers: list[TrafficDriver] = []

    def start(route: Route) -> TrafficDriver:
        drivers.append(TrafficDriver(k8s, namespace, route, backends.endpoints, rps=RPS).start())
        return drivers[-1]

    yield start
    for driver in drivers:
        driver.close()


def wait_backends(backends: Backends, count: int) -> None:
    procs.wait_until(lambda: len(backends.backends()) == count, 60, f"{count} model servers")


def counters(prometheus: Prometheus, namespace: str, at: float) -> dict[str, float]:
    query = f'sum by (deployment) (model_requests_total{{namespace="{namespace}"}})'
    result = prometheus.query(query, at=at)["result"]
    return {r["metric"]["deployment"]: float(r["value"][1]) for r in result}


def observed_share(prometheus: Prometheus, namespace: str, deployment: str) -> float:
    """`deployment`'s percentage of the requests Prometheus counts in the next WINDOW.

    Counter values at two instants: every target is scraped at a fixed phase, so each
    one's difference spans the same whole number of scrape intervals.
    """
    prometheus.wait_for(
        f'model_requests_total{{namespace="{namespace}",code="200"}} > 0', bool, timeout=15
    )
    time.sleep(1.5)  # the samples read at `start` were scraped under the current weights
    start = time.time()
    time.sleep(WINDOW)
    end = time.time()
    time.sleep(1.5)  # until every target's last scrape before `end` is stored
    before, after = counters(prometheus, namespace, start), counters(prometheus, namespace, end)
    delta = {d: after[d] - before.get(d, 0.0) for d in after}
    share = 100 * delta.get(deployment, 0.0) / sum(delta.values())
    print(f"Prometheus counted {delta} in {end - start:.1f}s: {deployment} {share:.2f}%")
    return share


def wait_weights(driver: TrafficDriver, weights: dict[str, int]) -> None:
    procs.wait_until(lambda: driver.plan.weights() == weights, 10, f"the driver at {weights}")


def pod_names(api: Api, deployment: str) -> set[str]:
    core = kubernetes.client.CoreV1Api(api.client)
    pods = core.list_namespaced_pod(api.namespace, label_selector=f"deployment={deployment}")
    return {p.metadata.name for p in pods.items if p.metadata.deletion_timestamp is None}


def test_httproute_weights_split_traffic_and_faults_reach_prometheus(
    api: Api, backends: Backends, drive: Drive, prometheus: Prometheus
) -> None:
    ns = api.namespace
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "ranker"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [  # rule 0 is someone else's; the rollout names rule 1
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/legacy"}}],
                    "backendRefs": backend_refs({"ranker-v1": 1}),
                },
                {"backendRefs": backend_refs({"ranker-v1": 80, "ranker-v2": 20})},
            ],
        },
    }
    rollout = {
        "apiVersion": "rollouts.mlops.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "ranker"},
        "spec": {
            "stable": {"deployment": "ranker-v1", "service": "ranker-v1"},
            "candidate": {"deployment": "ranker-v2", "service": "ranker-v2"},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "ranker", "ruleIndex": 1}},
            "strategy": {"preset": "1-5-25-100", "stageDuration": "30s"},
        },
    }
    api.apply(
        model("ranker-v1", "ranker", 2),
        model("ranker-v2", "ranker", 1),
        service("ranker-v1", app="ranker", deployment="ranker-v1"),
        service("ranker-v2", app="ranker", deployment="ranker-v2"),
        route,
        rollout,
    )
    wait_backends(backends, 3)

    # A process per Ready pod, with the pod's version, scraped with the pod's labels.
    servers = backends.backends()
    expected = {("ranker-v1", p) for p in pod_names(api, "ranker-v1")}
    expected |= {("ranker-v2", p) for p in pod_names(api, "ranker-v2")}
    assert {(b.deployment, b.pod) for b in servers} == expected
    assert all(procs.pid_alive(b.proc.pid) for b in servers)
    assert {b.deployment: b.version for b in servers} == {"ranker-v1": "v1", "ranker-v2": "v2"}
    assert len(backends.endpoints(ns, "ranker-v1")) == 2
    up = prometheus.wait_for(
        f'up{{namespace="{ns}"}}', lambda r: values(r) == [1.0] * 3, timeout=15
    )
    assert {(r["metric"]["deployment"], r["metric"]["pod"]) for r in up} == expected

    driver = drive(Route("rollout", "ranker"))
    wait_weights(driver, {"ranker-v1": 80, "ranker-v2": 20})
    assert abs(observed_share(prometheus, ns, "ranker-v2") - 20) <= 2

    api.control_plane.kubectl(
        "patch", "httproute", "ranker", "-n", ns, "--type=json", "-p",
        json.dumps([
            {"op": "replace", "path": "/spec/rules/1/backendRefs/0/weight", "value": 50},
            {"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 50},
        ]),
    )  # fmt: skip
    wait_weights(driver, {"ranker-v1": 50, "ranker-v2": 50})
    assert abs(observed_share(prometheus, ns, "ranker-v2") - 50) <= 2

    # A fault annotated on running pods reaches their servers without a restart.
    api.control_plane.kubectl(
        "annotate", "pods", "-n", ns, "-l", "deployment=ranker-v2",
        "model.mlops.io/error-rate=1.0",
    )  # fmt: skip
    errors = f'sum by (deployment) (model_requests_total{{namespace="{ns}",code="500"}})'
    prometheus.wait_for(errors, lambda r: any(v > 0 for v in values(r)), timeout=15)
    by_deployment = {
        r["metric"]["deployment"]: float(r["value"][1]) for r in prometheus.query(errors)["result"]
    }
    assert by_deployment["ranker-v2"] > 0
    assert by_deployment["ranker-v1"] == 0
    now = backends.backends()
    assert {b.deployment: b.faults["errorRate"] for b in now} == {"ranker-v1": 0, "ranker-v2": 1}
    assert {b.proc.pid for b in now} == {b.proc.pid for b in servers}  # not restarted

    counts = driver.counts()
    print(f"driver: {counts.answered_per_second:.1f} answers/s at {RPS:.0f} rps; {counts}")
    assert counts.answered_per_second >= 0.95 * RPS
    assert counts.failed == {}
    assert counts.unroutable == 0
    assert counts.dropped == 0
    assert counts.mirrored == {}
    assert set(counts.sent) == {"ranker-v1", "ranker-v2"}

    # A mirror stage as the operator writes it: weight 0 and a RequestMirror filter.
    rule = {
        "backendRefs": backend_refs({"ranker-v1": 100, "ranker-v2": 0}),
        "filters": [
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "ranker-v2", "port": 80}},
            }
        ],
    }
    api.control_plane.kubectl(
        "patch", "httproute", "ranker", "-n", ns, "--type=json",
        "-p", json.dumps([{"op": "replace", "path": "/spec/rules/1", "value": rule}]),
    )  # fmt: skip
    procs.wait_until(lambda: driver.plan.mirror is not None, 10, "the driver to mirror")
    before = driver.counts()
    time.sleep(2)
    after = driver.counts()
    assert after.sent["ranker-v2"] == before.sent["ranker-v2"]
    copies = after.mirrored["ranker-v2"] - before.mirrored.get("ranker-v2", 0)
    routed = after.sent["ranker-v1"] - before.sent["ranker-v1"]
    assert routed > 0
    assert abs(copies - routed) <= 1  # a snapshot may fall between a request and its copy


def test_replicas_router_share_follows_replica_counts_and_servers_follow_scaling(
    api: Api, backends: Backends, drive: Drive, prometheus: Prometheus
) -> None:
    ns = api.namespace
    api.apply(
        model("fraud-v1", "fraud", 3),
        # Template annotations reach the new pods, and their servers start with them.
        model("fraud-v2", "fraud", 1, **{"model.mlops.io/feature-shift": "amount=1"}),
        service("fraud", app="fraud"),
    )
    wait_backends(backends, 4)
    (candidate,) = [b for b in backends.backends() if b.deployment == "fraud-v2"]
    with urllib.request.urlopen(f"{candidate.url}/admin/faults", timeout=5) as response:
        assert json.load(response)["featureShift"] == {"amount": 1.0}

    driver = drive(Route("service", "fraud"))
    assert abs(observed_share(prometheus, ns, "fraud-v2") - 25) <= 2

    before = {b.pod: b.proc.pid for b in backends.backends() if b.deployment == "fraud-v1"}
    kubernetes.client.AppsV1Api(api.client).patch_namespaced_deployment_scale(
        "fraud-v1", ns, {"spec": {"replicas": 1}}
    )
    wait_backends(backends, 2)
    kept = {b.pod for b in backends.backends()}
    gone = {pod: pid for pod, pid in before.items() if pod not in kept}
    assert len(gone) == 2
    procs.wait_until(
        lambda: not any(procs.pid_alive(pid) for pid in gone.values()), 10, "servers stopped"
    )
    assert kept == pod_names(api, "fraud-v1") | pod_names(api, "fraud-v2")
    prometheus.wait_for(f'up{{namespace="{ns}"}}', lambda r: len(r) == 2, timeout=15)
    counts = driver.counts()
    print(f"driver after the scale-down: {counts}")
    assert counts.sent.keys() == {"fraud-v1", "fraud-v2"}
    assert counts.failed == {}  # the gone pods' servers drained before they stopped


def test_istio_mirror_copies_requests_to_a_zero_weight_candidate(
    api: Api, control_plane: ControlPlane, prometheus: Prometheus, spawn: Spawn, tmp_path: Path
) -> None:
    """Both pieces as their command-line processes, talking through the state file."""
    ns = api.namespace
    api.apply(
        model("churn-v1", "churn", 1),
        model("churn-v2", "churn", 1),
        service("churn-v1", app="churn", deployment="churn-v1"),
        service("churn-v2", app="churn", deployment="churn-v2"),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "churn"},
            "spec": {
                "hosts": ["churn"],
                "http": [
                    {
                        "name": "predict",
                        "route": [
                            {"destination": {"host": "churn-v1"}, "weight": 100},
                            {"destination": {"host": f"churn-v2.{ns}.svc.cluster.local"}},
                        ],
                        "mirror": {"host": "churn-v2"},
                        "mirrorPercentage": {"value": 100.0},
                    }
                ],
            },
        },
    )
    state, stats = tmp_path / "backends.json", tmp_path / "traffic.json"
    env = {"PYTHONPATH": str(ROOT / "tests"), "KUBECONFIG": str(control_plane.kubeconfig)}
    python = [sys.executable, "-m"]
    spawn(
        "backends",
        [*python, "testbed.backends", "-n", ns, "--state-file", state,
         "--targets-file", prometheus.workdir / "targets.json"],
        env=env,
    )  # fmt: skip
    procs.wait_until(
        lambda: state.exists() and len(json.loads(state.read_text())["backends"]) == 2,
        60,
        "two backends in the state file",
    )
    doc = json.loads(state.read_text())
    assert set(doc) == {"pid", "updated", "backends"}
    assert {(b["deployment"], b["version"]) for b in doc["backends"]} == {
        ("churn-v1", "v1"),
        ("churn-v2", "v2"),
    }
    spawn(
        "traffic",
        [*python, "testbed.traffic", "-n", ns, "--virtualservice", "churn",
         "--route-name", "predict", "--state-file", state, "--stats-file", stats,
         "--rps", str(RPS)],
        env=env,
    )  # fmt: skip

    # The mirror receives a copy of every request, and none through the weights.
    assert abs(observed_share(prometheus, ns, "churn-v2") - 50) <= 2
    counts = json.loads(stats.read_text())
    assert counts["sent"].get("churn-v2", 0) == 0
    assert counts["mirrored"]["churn-v2"] > 0.9 * counts["sent"]["churn-v1"]
