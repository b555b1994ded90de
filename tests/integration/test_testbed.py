"""The test bed itself: real TLS, real RBAC, real scraping, and no leaked processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from testbed import ControlPlane, Prometheus, free_port, procs
from testbed.controlplane import NODE_LEASE_SECONDS, exists
from testbed.kubeconfig import cert_user, client_from_kubeconfig, write_kubeconfig
from testbed.pki import make_pki
from testbed.procs import Spawn
from testbed.prometheus import values

pytestmark = pytest.mark.integration

EXPORTER = textwrap.dedent(
    """
    import sys, time
    from prometheus_client import Counter, start_http_server
    Counter("testbed_demo_requests", "Requests served.").inc(42)
    start_http_server(int(sys.argv[1]), addr="127.0.0.1")
    while True:
        time.sleep(60)
    """
)


def _eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Retry `check` until it stops raising (RBAC changes reach the authorizer async)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except (AssertionError, ApiException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_rbac_forbids_unprivileged_service_account(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    m = kubernetes.client
    core = m.CoreV1Api(k8s)
    core.create_namespaced_service_account(
        namespace, m.V1ServiceAccount(metadata=m.V1ObjectMeta(name="nobody"))
    )
    request = m.AuthenticationV1TokenRequest(
        spec=m.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    status = core.create_namespaced_service_account_token("nobody", namespace, request).status
    assert status is not None
    assert status.token
    kubeconfig = control_plane.kubeconfig_for_token(status.token)
    with client_from_kubeconfig(kubeconfig) as sa_client:
        review = m.AuthenticationV1Api(sa_client).create_self_subject_review(
            m.V1SelfSubjectReview()
        )
        assert review.status is not None
        assert review.status.user_info is not None
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"

        sa_core = m.CoreV1Api(sa_client)
        with pytest.raises(ApiException) as forbidden:
            sa_core.list_namespaced_secret(namespace)
        assert forbidden.value.status == 403
        assert core.list_namespaced_secret(namespace).items == []  # the admin may

        rbac = m.RbacAuthorizationV1Api(k8s)
        rule = m.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])
        rbac.create_namespaced_role(
            namespace, m.V1Role(metadata=m.V1ObjectMeta(name="secret-reader"), rules=[rule])
        )
        binding = m.V1RoleBinding(
            metadata=m.V1ObjectMeta(name="nobody-reads-secrets"),
            role_ref=m.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
            ),
            subjects=[m.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
        )
        rbac.create_namespaced_role_binding(namespace, binding)
        _eventually(lambda: sa_core.list_namespaced_secret(namespace))
        with pytest.raises(ApiException) as still_forbidden:
            sa_core.list_namespaced_secret("default")
        assert still_forbidden.value.status == 403


def test_tls_is_verified(control_plane: ControlPlane, tmp_path: Path) -> None:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == control_plane.server
    assert cluster["server"].startswith("https://127.0.0.1:")
    assert cluster["certificate-authority-data"]
    assert "insecure-skip-tls-verify" not in cluster

    with control_plane.api_client() as good:
        assert kubernetes.client.VersionApi(good).get_code().git_version == "v1.34.4"

    other = make_pki(tmp_path / "other-pki")
    user = cert_user(control_plane.pki.admin_cert, control_plane.pki.admin_key)
    wrong = write_kubeconfig(tmp_path / "wrong-ca", control_plane.server, other.ca_cert, user)
    with client_from_kubeconfig(wrong) as bad:
        bad.configuration.retries = 0
        with pytest.raises(urllib3.exceptions.HTTPError, match="CERTIFICATE_VERIFY_FAILED"):
            kubernetes.client.VersionApi(bad).get_code()


def test_prometheus_scrapes_a_real_exporter(prometheus: Prometheus, spawn: Spawn) -> None:
    port = free_port()
    exporter = spawn("exporter", [sys.executable, "-c", EXPORTER, str(port)])
    prometheus.set_targets([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "demo"}}])

    result = prometheus.wait_for(
        'testbed_demo_requests_total{job="demo"}', lambda r: values(r) == [42.0]
    )
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{port}"
    prometheus.wait_for('up{job="demo"}', lambda r: values(r) == [1.0])

    exporter.stop()
    prometheus.wait_for('up{job="demo"}', lambda r: values(r) == [0.0])
    prometheus.set_targets([])
    prometheus.wait_for('up{job="demo"}', lambda r: r == [])


def test_prometheus_kill_and_restart_keeps_port_and_data(prometheus: Prometheus) -> None:
    port = prometheus.port
    prometheus.set_targets([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "self"}}])
    prometheus.wait_for('up{job="self"}', lambda r: values(r) == [1.0])
    scraped_at = time.time()
    old_pid = prometheus.proc.pid if prometheus.proc else 0

    prometheus.kill()
    assert not procs.pid_alive(old_pid)
    assert not prometheus.ready()

    prometheus.restart()
    assert prometheus.port == port
    assert prometheus.proc is not None
    assert prometheus.proc.pid != old_pid
    assert prometheus.ready()
    # Samples from before the crash survive in the tsdb (WAL replay).
    assert values(prometheus.query('up{job="self"}', at=scraped_at)["result"]) == [1.0]
    prometheus.wait_for('up{job="self"}', lambda r: values(r) == [1.0])


def test_processes_are_gone_after_stop(control_plane: ControlPlane) -> None:
    with ControlPlane(bin_dir=control_plane.bin_dir, nodes=1) as cp:
        pids = [p.pid for p in cp.procs]
        assert [p.name for p in cp.procs] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        assert all(procs.pid_alive(pid) for pid in pids)
        assert cp.ready()
        workdir = cp.workdir
    with Prometheus() as prom:
        pids.append(prom.proc.pid if prom.proc else 0)

    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not workdir.exists()


def test_children_die_with_a_sigkilled_parent() -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed pytest must not leave the control plane running."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import testbed.procs as p, sys, time;"
            "print(p.spawn('sleeper', ['sleep', '300']).pid, flush=True); time.sleep(300)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert procs.pid_alive(child)
    parent.kill()
    parent.wait()
    procs.wait_until(lambda: not procs.pid_alive(child), 5, f"orphaned sleeper {child} to die")


def test_gateway_api_and_istio_kinds_are_served(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    custom = kubernetes.client.CustomObjectsApi(k8s)
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "model", "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "stable", "port": 80, "weight": 90},
                        {"name": "canary", "port": 80, "weight": 10},
                    ]
                }
            ],
        },
    }
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", route
    )
    stored = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "model"
        ),
    )
    assert [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]] == [90, 10]

    route["metadata"]["name"] = "negative-weight"
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    with pytest.raises(ApiException) as invalid:  # the CRD's schema is enforced
        custom.create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", route
        )
    assert invalid.value.status == 422

    control_plane.apply(
        textwrap.dedent(
            f"""
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {{name: model, namespace: {namespace}}}
            spec:
              hosts: [model]
              http:
              - route:
                - {{destination: {{host: stable}}, weight: 90}}
                - {{destination: {{host: canary}}, weight: 10}}
            """
        )
    )
    vs = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices", "model"
        ),
    )
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [90, 10]


# -- workloads: controllers, scheduler and kwok ------------------------------------------


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # Never pulled nor run: kwok only plays the kubelet's part.
                "spec": {"containers": [{"name": "model", "image": "example.invalid/model:1"}]},
            },
        },
    }


def _wait_settled(
    apps: kubernetes.client.AppsV1Api, namespace: str, name: str, replicas: int
) -> kubernetes.client.V1DeploymentStatus:
    """Wait until the Deployment controller reports exactly `replicas` ready and available."""
    seen: list[Any] = []

    def settled() -> bool:
        dep = apps.read_namespaced_deployment(name, namespace)
        st = dep.status
        seen[:] = [st]
        return bool(
            (st.observed_generation or 0) >= dep.metadata.generation
            and st.replicas == replicas
            and st.updated_replicas == replicas
            and st.ready_replicas == replicas
            and st.available_replicas == replicas
            and not st.unavailable_replicas
        )

    try:
        procs.wait_until(settled, 60, f"Deployment {name} to settle at {replicas}")
    except TimeoutError as err:
        raise AssertionError(f"{err}; last status: {seen[0] if seen else None}") from None
    status: kubernetes.client.V1DeploymentStatus = seen[0]
    return status


def _pods(core: kubernetes.client.CoreV1Api, namespace: str, app: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def _assert_running_on_fake_nodes(pods: list[Any], cp: ControlPlane) -> None:
    for pod in pods:
        assert pod.metadata.deletion_timestamp is None
        assert pod.spec.node_name in cp.node_names  # bound by kube-scheduler
        assert pod.status.phase == "Running"  # kwok's doing, as a kubelet's would be
        conditions = {c.type: c.status for c in pod.status.conditions}
        assert conditions["Ready"] == "True"
        assert conditions["ContainersReady"] == "True"
        assert [c.ready for c in pod.status.container_statuses] == [True]
        assert pod.status.container_statuses[0].state.running is not None
        assert pod.status.pod_ip
    assert len({pod.status.pod_ip for pod in pods}) == len(pods)


def test_fake_nodes_are_ready(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient
) -> None:
    nodes = kubernetes.client.CoreV1Api(k8s).list_node().items
    assert sorted(n.metadata.name for n in nodes) == control_plane.node_names
    assert len(nodes) >= 2
    for node in nodes:
        conditions = {c.type: c.status for c in node.status.conditions}
        assert conditions["Ready"] == "True"
        assert node.status.allocatable["pods"] == "500"
        assert not node.spec.taints  # nothing keeps ordinary Pods off them
        assert node.spec.unschedulable is None
    # kwok heartbeats through Leases, as kubelets do, so the node-lifecycle controller
    # never finds a Node silent for its grace period and marks its Pods NotReady.
    coordination = kubernetes.client.CoordinationV1Api(k8s)
    now = datetime.now(UTC)
    for name in control_plane.node_names:
        lease = coordination.read_namespaced_lease(name, "kube-node-lease").spec
        assert lease.lease_duration_seconds == NODE_LEASE_SECONDS
        assert now - lease.renew_time < timedelta(seconds=NODE_LEASE_SECONDS)


def test_deployment_gets_ready_pods_and_follows_scaling(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(k8s)
    core = kubernetes.client.CoreV1Api(k8s)
    apps.create_namespaced_deployment(namespace, _deployment("model", 3))

    status = _wait_settled(apps, namespace, "model", 3)
    assert status.ready_replicas == 3
    assert status.available_replicas == 3
    assert {c.type: c.status for c in status.conditions} == {
        "Available": "True",
        "Progressing": "True",
    }
    pods = _pods(core, namespace, "model")
    assert len(pods) == 3
    _assert_running_on_fake_nodes(pods, control_plane)
    (rs,) = apps.list_namespaced_replica_set(namespace, label_selector="app=model").items
    assert rs.metadata.owner_references[0].kind == "Deployment"
    assert {p.metadata.owner_references[0].uid for p in pods} == {rs.metadata.uid}

    apps.patch_namespaced_deployment_scale("model", namespace, {"spec": {"replicas": 5}})
    _wait_settled(apps, namespace, "model", 5)
    pods = _pods(core, namespace, "model")
    assert len(pods) == 5
    _assert_running_on_fake_nodes(pods, control_plane)

    apps.patch_namespaced_deployment_scale("model", namespace, {"spec": {"replicas": 1}})
    _wait_settled(apps, namespace, "model", 1)
    # The four surplus Pods are not just marked for deletion: kwok lets them go.
    procs.wait_until(lambda: len(_pods(core, namespace, "model")) == 1, 30, "surplus Pods gone")
    _assert_running_on_fake_nodes(_pods(core, namespace, "model"), control_plane)

    # Garbage collection: the ReplicaSet and its Pod go with the Deployment.
    apps.delete_namespaced_deployment("model", namespace, propagation_policy="Background")
    procs.wait_until(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        30,
        "the garbage collector to delete the ReplicaSet and its Pods",
    )


def _job(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "eval", "image": "eval:1"}]}
    template = {"metadata": {"annotations": annotations}, "spec": pod}
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": template}}


def test_a_jobs_pod_ends_as_its_annotations_say(
    k8s: kubernetes.client.ApiClient, namespace: str
) -> None:
    """kwok plays a kubelet whose Job pods end as tests ask (kwok-pod-stages.yaml): by
    default at once and successfully; else with the exit code, termination message
    and running time their annotations give."""
    batch, core = kubernetes.client.BatchV1Api(k8s), kubernetes.client.CoreV1Api(k8s)
    jobs = {
        "plain": {},
        "failing": {
            "kwok.mlops.io/exit-code": "3",
            "kwok.mlops.io/termination-message": '{"auc": 0.5, "note": "quote \\" and\\nline"}',
        },
        "slow": {"kwok.mlops.io/run-seconds": "5", "kwok.mlops.io/termination-message": "done"},
    }
    for name, asked in jobs.items():
        batch.create_namespaced_job(namespace, _job(name, asked))

    def ended(name: str) -> str | None:
        conditions = batch.read_namespaced_job(name, namespace).status.conditions or []
        return next((c.type for c in conditions if c.type in ("Complete", "Failed")), None)

    for name in jobs:
        procs.wait_until(lambda n=name: ended(n) is not None, 60, f"Job {name} to end")
    assert {name: ended(name) for name in jobs} == {
        "plain": "Complete",
        "failing": "Failed",
        "slow": "Complete",
    }
    states = {}
    for name in jobs:
        (pod,) = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
        (container,) = pod.status.container_statuses
        states[name] = (pod.status.phase, container.state.terminated)
    assert states["plain"][0] == "Succeeded"
    assert (states["plain"][1].exit_code, states["plain"][1].message) == (0, None)
    failing = states["failing"][1]
    assert (states["failing"][0], failing.exit_code, failing.reason) == ("Failed", 3, "Error")
    assert failing.message == jobs["failing"]["kwok.mlops.io/termination-message"]
    slow = states["slow"][1]
    assert (states["slow"][0], slow.exit_code, slow.message) == ("Succeeded", 0, "done")
    assert slow.finished_at - slow.started_at >= timedelta(seconds=5), "it ended early"


def test_namespace_deletion_completes(
    control_plane: ControlPlane, k8s: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(k8s)
    apps = kubernetes.client.AppsV1Api(k8s)
    custom = kubernetes.client.CustomObjectsApi(k8s)
    name = f"doomed-{os.urandom(4).hex()}"
    core.create_namespace({"metadata": {"name": name}})
    procs.wait_until(
        lambda: exists(lambda: core.read_namespaced_service_account("default", name)),
        30,
        "the default ServiceAccount",
    )
    apps.create_namespaced_deployment(name, _deployment("model", 2))
    _wait_settled(apps, name, "model", 2)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "model"},
        "spec": {"parentRefs": [{"name": "gateway"}]},
    }
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", name, "httproutes", route
    )

    core.delete_namespace(name)
    assert core.read_namespace(name).status.phase == "Terminating"

    procs.wait_until(
        lambda: not exists(lambda: core.read_namespace(name)), 60, f"namespace {name} deleted"
    )
    # Its contents went with it: a namespace of the same name starts out empty.
    core.create_namespace({"metadata": {"name": name}})
    try:
        assert apps.list_namespaced_deployment(name).items == []
        assert core.list_namespaced_pod(name).items == []
        routes = custom.list_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", name, "httproutes"
        )
        assert routes["items"] == []
    finally:
        core.delete_namespace(name)


def test_cluster_up_again_leaves_the_demo_route_to_the_operator(tmp_path: Path) -> None:
    """`make cluster-up` seeds the demo only on a fresh cluster: run again after the
    operator took the demo route's weights, it neither fails on the conflict nor puts
    the seed's weights back."""
    from testbed.__main__ import down, up

    home, kubeconfig = tmp_path / "cluster", tmp_path / "kubeconfig"
    try:
        assert up(home, kubeconfig) is True
        cp = ControlPlane.attach(json.loads((home / "state.json").read_text()))
        route = json.loads(cp.kubectl("get", "httproute", "fraud", "-n", "demo", "-o", "json"))
        rules = route["spec"]["rules"]
        rules[0]["backendRefs"][0]["weight"], rules[0]["backendRefs"][1]["weight"] = 75, 25
        taken = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "fraud", "namespace": "demo"},
            "spec": {"rules": rules},
        }
        cp.apply(
            json.dumps(taken) + "\n", "--force-conflicts", "--field-manager=modelrollout-operator"
        )
        assert up(home, kubeconfig) is False
        again = json.loads(cp.kubectl("get", "httproute", "fraud", "-n", "demo", "-o", "json"))
        assert [b["weight"] for b in again["spec"]["rules"][0]["backendRefs"]] == [75, 25]
    finally:
        down(home, kubeconfig)
