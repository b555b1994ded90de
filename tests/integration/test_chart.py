"""The Helm chart and the kustomize manifests, against the real API server.

helm is built from hack/helm/go.mod by hack/helm/build.sh (or taken from $HELM_BIN).
Rendered manifests go through `kubectl apply --dry-run=server`, so the API server's
own validation (schemas, RBAC rules, Pod Security) judges them; the RBAC is also
applied for real and proven twice: by access reviews (what it allows and what not)
and by running the operator under it until a rollout progresses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import kubernetes
import pytest
import yaml

from modelrollout.__main__ import parse_args
from modelrollout.core.targets import routing_kinds
from modelrollout.shadow.settings import parse_settings
from testbed import ControlPlane, procs
from testbed.binaries import _module_dir
from testbed.helm import CHART, render, service_account_rbac, template
from testbed.paths import CRD_CACHE, ROOT, MissingPrerequisite, in_ci, require_tool
from testbed.procs import Spawn

from . import objects
from .conftest import Api, phase

RENDER_BASE = ROOT / "hack" / "helm" / "render-base.sh"
MANIFESTS = ROOT / "manifests"
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")
PROMETHEUS_OPERATOR_CRDS = ("servicemonitors", "prometheusrules")

Obj = dict[str, Any]


def rule(group: str, resources: str, verbs: str, names: str = "") -> Obj:
    """A PolicyRule as the chart renders it, from space-separated words."""
    out: Obj = {"apiGroups": [group], "resources": resources.split()}
    if names:
        out["resourceNames"] = names.split()
    return out | {"verbs": verbs.split()}


# What the operator needs in a namespace it watches (templates/rbac.yaml): and only this.
OPERATOR_RULES = [
    rule("rollouts.mlops.io", "modelrollouts", "get list watch patch"),
    rule("rollouts.mlops.io", "modelrollouts/status", "patch"),
    rule("", "events", "create"),
    rule("apps", "deployments", "get list watch patch"),
    rule("", "services", "get"),
    rule("", "configmaps", "get list watch"),
    *(rule(k.group, k.plural, "get list watch create patch") for k in routing_kinds(created=True)),
    *(rule(k.group, k.plural, "get list watch patch") for k in routing_kinds(created=False)),
    rule("batch", "jobs", "get create patch delete"),
    rule("", "pods", "list"),
]
CRD_READS = rule("apiextensions.k8s.io", "customresourcedefinitions", "list watch")


def _unavailable(err: MissingPrerequisite) -> NoReturn:
    if in_ci():
        pytest.fail(f"prerequisite missing under CI: {err}", pytrace=False)
    pytest.skip(f"prerequisite missing: {err}")


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def only(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[d['kind'] for d in docs]}"
    return found[0]


def kubectl(
    cp: ControlPlane, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.kubeconfig}", *args]
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)


def dry_run(cp: ControlPlane, manifests: str) -> str:
    """`kubectl apply --dry-run=server`: the API server validates, stores nothing."""
    result = kubectl(cp, "apply", "--dry-run=server", "-f", "-", input=manifests)
    assert result.returncode == 0, f"the API server refused:\n{result.stderr}"
    assert "Warning" not in result.stderr, result.stderr  # e.g. would violate PodSecurity
    return result.stdout


def restricted(cp: ControlPlane, namespace: str) -> None:
    """Enforce (and warn about) the restricted Pod Security Standard in `namespace`."""
    for mode in ("enforce", "warn"):
        label = f"pod-security.kubernetes.io/{mode}=restricted"
        assert kubectl(cp, "label", "namespace", namespace, label).returncode == 0


@pytest.fixture
def cluster_objects(control_plane: ControlPlane) -> Iterator[list[str]]:
    """Label selectors whose cluster-scoped objects are deleted after the test."""
    selectors: list[str] = []
    yield selectors
    for selector in selectors:
        kinds = "clusterrole,clusterrolebinding"
        kubectl(control_plane, "delete", kinds, "-l", selector, "--ignore-not-found")


@pytest.fixture(scope="session")
def prometheus_operator_crds(control_plane: ControlPlane) -> None:
    """ServiceMonitor and PrometheusRule CRDs, from the Prometheus Operator's module."""
    module, version = PROMETHEUS_OPERATOR
    folder = CRD_CACHE / "prometheus-operator"
    stamp = folder / ".version"
    if not (stamp.exists() and stamp.read_text() == f"{module}@{version}"):
        try:
            require_tool("go", hint=f"Go is needed to download {module}@{version}.")
        except MissingPrerequisite as err:
            _unavailable(err)
        source = _module_dir(module, version) / "example" / "prometheus-operator-crd"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for plural in PROMETHEUS_OPERATOR_CRDS:
            name = f"monitoring.coreos.com_{plural}.yaml"
            (folder / name).write_bytes((source / name).read_bytes())
        stamp.write_text(f"{module}@{version}")
    control_plane.install_crds(folder)


# -- helm lint and the values schema ---------------------------------------------------

LINTED_VALUES = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"], "prometheusSecrets": ["prom-token"]},
    "peering": {"replicas": 3, "highAvailability": {"mode": "peering"}},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True, "namespace": "monitoring"},
    },
    "shadow comparator": {
        "shadowComparator": {
            "enabled": True,
            "rollout": "ranker",
            "stable": "http://ranker-v7.ml.svc:8080",
            "candidate": "http://ranker-v8.ml.svc:8080",
            "compare": ["$.score~0.001", "$.label"],
        },
        "serviceMonitor": {"enabled": True},
    },
}


@pytest.mark.parametrize("values", LINTED_VALUES.values(), ids=LINTED_VALUES.keys())
def test_helm_lint_strict_is_clean(helm: str, tmp_path: Path, values: Obj) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--values", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


BAD_VALUES = {
    "replicas as a word": ({"replicas": "two"}, "/replicas"),
    "negative replicas": ({"replicas": -1}, "/replicas"),
    "unknown mode": ({"highAvailability": {"mode": "active"}}, "/highAvailability/mode"),
    "unknown log format": ({"logFormat": "xml"}, "/logFormat"),
    "namespace not a DNS label": ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    "namespace twice": ({"watchNamespaces": ["a", "a"]}, "/watchNamespaces"),
    "secret names not a list": ({"prometheusSecrets": "token"}, "/prometheusSecrets"),
    "pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "scrape interval": ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
    "flag as a string": ({"prometheusRule": {"enabled": "yes"}}, "/prometheusRule/enabled"),
    "a typo": ({"replica": 2}, "replica"),
    "a nested typo": ({"serviceMonitor": {"enable": True}}, "enable"),
    "shadow share over 1": ({"shadowComparator": {"share": 1.5}}, "/shadowComparator/share"),
    "shadow URL without scheme": (
        {"shadowComparator": {"stable": "ranker:8080"}},
        "/shadowComparator/stable",
    ),
    "shadow URL with a query": (
        {"shadowComparator": {"candidate": "http://c:8080/?x=1"}},
        "/shadowComparator/candidate",
    ),
    "shadow timeout zero": (
        {"shadowComparator": {"candidateTimeout": 0}},
        "/shadowComparator/candidateTimeout",
    ),
    "shadow rule empty": ({"shadowComparator": {"compare": [""]}}, "/shadowComparator/compare/0"),
    "shadow typo": ({"shadowComparator": {"enable": True}}, "enable"),
}


@pytest.mark.parametrize(("values", "where"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_the_values_schema_rejects_bad_values(helm: str, values: Obj, where: str) -> None:
    result = template(helm, values)
    assert result.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr


def test_several_standalone_replicas_are_refused(helm: str) -> None:
    result = template(helm, {"replicas": 2})
    assert result.returncode != 0
    assert "replicas > 1 needs highAvailability.mode=leaderElection (or peering)" in result.stderr


def test_every_default_value_is_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(values: Obj, node: Obj, path: str) -> None:
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}{key} is not in the schema"
            sub = node["properties"][key]
            if isinstance(value, dict) and sub.get("additionalProperties") is False:
                walk(value, sub, f"{path}{key}.")

    walk(defaults, schema, "")
    assert schema["additionalProperties"] is False


# -- what the chart renders ------------------------------------------------------------


def test_the_default_pod_is_hardened_and_probed(helm: str) -> None:
    docs = documents(render(helm))
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/mlops/modelrollout-operator:{app_version}"
    assert container["command"] == ["python", "-m", "modelrollout"]
    assert container["args"] == [
        "--log-format=json",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--metrics-port=8080",
        "--allowed-addresses=*.svc,*.svc.cluster.local",  # in-cluster Services only
    ]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http-metrics": 8080, "health": 8081}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp"
    assert "emptyDir" in pod["volumes"][0]
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount",
    ]  # fmt: skip


def _args(workload: Obj) -> list[str]:
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_operator_accepts_the_rendered_arguments(helm: str) -> None:
    values = {
        "watchNamespaces": ["team-a", "team-b"],
        "replicas": 2,
        "highAvailability": {"mode": "peering", "peeringName": "mro-peers"},
        "logFormat": "plain",
        "verbose": True,
    }
    statefulset = only(documents(render(helm, values)), "StatefulSet")
    # The kubelet expands $(POD_INDEX) from the pod-index label (see the env).
    args = [a.replace("$(POD_INDEX)", "1") for a in _args(statefulset)]
    parsed = parse_args(args)
    assert parsed.namespace == ["team-a", "team-b"]
    assert (parsed.peering, parsed.priority) == ("mro-peers", 1)
    assert parsed.liveness == "http://0.0.0.0:8081/healthz"
    assert parsed.metrics_port == 8080
    assert parsed.log_format == "plain"
    assert parsed.verbose
    assert parse_args(_args(only(documents(render(helm)), "Deployment"))).namespace == []


def test_peering_runs_a_statefulset_with_one_priority_per_pod(helm: str) -> None:
    values = {"replicas": 3, "highAvailability": {"mode": "peering"}}
    docs = documents(render(helm, values))
    assert not [d for d in docs if d["kind"] == "Deployment"]
    statefulset = only(docs, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    assert "--peering=modelrollout-operator" in _args(statefulset)
    assert "--priority=$(POD_INDEX)" in _args(statefulset)
    env = statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
    index = next(e for e in env if e["name"] == "POD_INDEX")
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert only(docs, "ClusterKopfPeering")["metadata"]["name"] == "modelrollout-operator"
    role = only(docs, "ClusterRole")
    assert role["rules"][-2:] == [
        rule("kopf.dev", "clusterkopfpeerings", "list watch"),
        rule("kopf.dev", "clusterkopfpeerings", "patch", names="modelrollout-operator"),
    ]


def test_peering_crds_come_with_the_chart_unless_turned_off(helm: str) -> None:
    def crds(values: Obj) -> set[str]:
        docs = documents(render(helm, values, "--include-crds"))
        return {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}

    ours = "modelrollouts.rollouts.mlops.io"
    peering = {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}
    assert crds({"highAvailability": {"mode": "peering"}}) == {ours, *peering}
    assert crds({"highAvailability": {"installPeeringCRDs": False}}) == {ours}


def test_cluster_wide_rbac_is_the_agreed_rules(helm: str) -> None:
    docs = documents(render(helm, {}, "--show-only", "templates/rbac.yaml"))
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding"]
    assert only(docs, "ClusterRole")["rules"] == [*OPERATOR_RULES, CRD_READS]
    binding = only(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mro-modelrollout-operator", "namespace": "default"}
    ]


def test_secrets_are_readable_only_by_the_names_given(helm: str) -> None:
    values = {"prometheusSecrets": ["prom-token", "prom-ca"]}
    docs = documents(render(helm, values, "--show-only", "templates/rbac.yaml"))
    secrets = [r for r in only(docs, "ClusterRole")["rules"] if "secrets" in r["resources"]]
    assert secrets == [rule("", "secrets", "get", names="prom-token prom-ca")]


def test_namespaced_rbac_is_one_role_per_watched_namespace(helm: str) -> None:
    values = {"watchNamespaces": ["team-a", "team-b"]}
    docs = documents(render(helm, values, "--show-only", "templates/rbac.yaml"))
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == OPERATOR_RULES
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    reads = only(docs, "ClusterRole")
    assert reads["metadata"]["name"].endswith("-cluster-reads")
    assert reads["rules"] == [CRD_READS, rule("", "namespaces", "list watch")]
    without = {**values, "rbac": {"clusterReads": False}}
    docs = documents(render(helm, without, "--show-only", "templates/rbac.yaml"))
    assert sorted({d["kind"] for d in docs}) == ["Role", "RoleBinding"]


def test_monitoring_objects_carry_the_shared_files(helm: str) -> None:
    values = {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "dashboard": {"enabled": True, "namespace": "monitoring"},
    }
    docs = documents(render(helm, values))
    rule = only(docs, "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    dashboard = only(docs, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert json.loads(dashboard["data"]["modelrollout.json"]) == shipped
    monitor = only(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["honorLabels"] is True  # keeps the rollouts' `namespace` label
    service_labels = only(docs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert not [d for d in documents(render(helm)) if d["kind"] in ("PrometheusRule", "ConfigMap")]


# -- the shadow comparator --------------------------------------------------------------

SHADOW: Obj = {
    "enabled": True,
    "rollout": "ranker",
    "rolloutNamespace": "ml",
    "stable": "http://ranker-v7.ml.svc:8080",
    "candidate": "http://ranker-v8.ml.svc:8080/v2",
    "share": 0.25,
    "compare": ["$.score~0.001", "$['label']"],
    "candidateTimeout": 1.5,
    "maxInFlight": 16,
}


def test_the_shadow_comparator_is_off_by_default_and_needs_its_targets(helm: str) -> None:
    assert not [d for d in documents(render(helm)) if "shadow" in d["metadata"]["name"]]
    for missing in ("rollout", "stable", "candidate"):
        values = {k: v for k, v in SHADOW.items() if k != missing}
        result = template(helm, {"shadowComparator": values})
        assert result.returncode != 0
        assert f"shadowComparator.{missing} is required" in result.stderr


def test_the_shadow_comparator_accepts_the_rendered_arguments(helm: str) -> None:
    docs = documents(render(helm, {"shadowComparator": SHADOW}))
    deployment = only(docs, "Deployment", "mro-modelrollout-operator-shadow")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container["image"] == f"ghcr.io/mlops/modelrollout-operator:{app_version}"
    assert container["command"] == ["modelrollout-shadow"]
    settings = parse_settings(container["args"], {})
    assert (str(settings.listen), str(settings.metrics_listen)) == ("0.0.0.0:8080", "0.0.0.0:8081")
    assert (str(settings.stable), str(settings.candidate)) == (
        SHADOW["stable"],
        SHADOW["candidate"],
    )
    assert (settings.rollout, settings.namespace, settings.share) == ("ranker", "ml", 0.25)
    assert [r.text for r in settings.rules] == SHADOW["compare"]
    assert (settings.candidate_timeout, settings.max_in_flight) == (1.5, 16)
    assert settings.follow_rollout
    # The operator's hardening, its own account, probes off the proxy's port.
    operator_pod = only(docs, "Deployment", "mro-modelrollout-operator")["spec"]["template"]
    assert pod["securityContext"] == operator_pod["spec"]["securityContext"]
    assert container["securityContext"] == operator_pod["spec"]["containers"][0]["securityContext"]
    assert pod["serviceAccountName"] == "mro-modelrollout-operator-shadow"
    assert pod["automountServiceAccountToken"] is True
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    # Its Service selects its pods, and the operator's Service does not.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = only(docs, "Service", "mro-modelrollout-operator-shadow")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"http": (80, "http"), "http-metrics": (8081, "http-metrics")}
    operator_selector = only(docs, "Service", "mro-modelrollout-operator-metrics")["spec"][
        "selector"
    ]
    assert not operator_selector.items() <= labels.items()
    # Only `get` on the one rollout, in its namespace.
    role = only(docs, "Role", "mro-modelrollout-operator-shadow")
    assert role["metadata"]["namespace"] == "ml"
    assert role["rules"] == [rule("rollouts.mlops.io", "modelrollouts", "get", names="ranker")]
    binding = only(docs, "RoleBinding", "mro-modelrollout-operator-shadow")
    assert binding["metadata"]["namespace"] == "ml"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "mro-modelrollout-operator-shadow",
            "namespace": "default",
        }
    ]

    unfollowed = {"shadowComparator": {**SHADOW, "followRollout": False}}
    docs = documents(render(helm, unfollowed))
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    pod = only(docs, "Deployment", "mro-modelrollout-operator-shadow")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not parse_settings(pod["containers"][0]["args"], {}).follow_rollout


def test_the_shadow_comparator_has_its_own_service_monitor(helm: str) -> None:
    values = {"shadowComparator": SHADOW, "serviceMonitor": {"enabled": True}}
    docs = documents(render(helm, values))
    monitor = only(docs, "ServiceMonitor", "mro-modelrollout-operator-shadow")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    service = only(docs, "Service", "mro-modelrollout-operator-shadow")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    operator_monitor = only(docs, "ServiceMonitor", "mro-modelrollout-operator")
    selector = operator_monitor["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= service["metadata"]["labels"].items()


# -- the API server's verdict ----------------------------------------------------------


def test_the_default_render_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str
) -> None:
    restricted(control_plane, namespace)
    out = dry_run(control_plane, render(helm, namespace=namespace))
    made = {line.split()[0] for line in out.splitlines() if line.endswith("(server dry run)")}
    assert made == {
        "serviceaccount/mro-modelrollout-operator",
        "clusterrole.rbac.authorization.k8s.io/mro-modelrollout-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/mro-modelrollout-operator",
        "service/mro-modelrollout-operator-metrics",
        "deployment.apps/mro-modelrollout-operator",
    }


def test_the_watch_namespaces_render_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str
) -> None:
    restricted(control_plane, namespace)
    values = {"watchNamespaces": [namespace, "default"], "prometheusSecrets": ["prom-token"]}
    out = dry_run(control_plane, render(helm, values, namespace=namespace))
    lines = out.splitlines()
    for kind in ("role", "rolebinding"):
        made = (
            f"{kind}.rbac.authorization.k8s.io/mro-modelrollout-operator created (server dry run)"
        )
        assert lines.count(made) == 2, out


def test_the_shadow_comparator_render_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str
) -> None:
    restricted(control_plane, namespace)
    values = {"shadowComparator": {**SHADOW, "rolloutNamespace": namespace}}
    out = dry_run(control_plane, render(helm, values, namespace=namespace))
    for made in (
        "serviceaccount/mro-modelrollout-operator-shadow",
        "deployment.apps/mro-modelrollout-operator-shadow",
        "service/mro-modelrollout-operator-shadow",
        "role.rbac.authorization.k8s.io/mro-modelrollout-operator-shadow",
        "rolebinding.rbac.authorization.k8s.io/mro-modelrollout-operator-shadow",
    ):
        assert f"{made} created (server dry run)" in out, out


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_the_shadow_comparator_monitor_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str
) -> None:
    values = {
        "shadowComparator": {**SHADOW, "rolloutNamespace": namespace},
        "serviceMonitor": {"enabled": True},
    }
    out = dry_run(control_plane, render(helm, values, namespace=namespace))
    made = "servicemonitor.monitoring.coreos.com/mro-modelrollout-operator-shadow created"
    assert made in out, out


@pytest.mark.usefixtures("peering_crds")
@pytest.mark.parametrize("watch", [False, True], ids=["cluster-wide", "namespaced"])
def test_the_peering_render_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str, watch: bool
) -> None:
    restricted(control_plane, namespace)
    values: Obj = {"replicas": 2, "highAvailability": {"mode": "peering"}}
    if watch:
        values["watchNamespaces"] = [namespace]
    out = dry_run(control_plane, render(helm, values, namespace=namespace))
    assert "statefulset.apps/mro-modelrollout-operator" in out
    kind = "kopfpeering" if watch else "clusterkopfpeering"
    assert f"{kind}.kopf.dev/modelrollout-operator" in out


@pytest.mark.usefixtures("prometheus_operator_crds")
def test_the_monitoring_render_passes_server_side_dry_run(
    helm: str, control_plane: ControlPlane, namespace: str
) -> None:
    values = {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
    out = dry_run(control_plane, render(helm, values, namespace=namespace))
    assert "servicemonitor.monitoring.coreos.com/mro-modelrollout-operator" in out
    assert "prometheusrule.monitoring.coreos.com/mro-modelrollout-operator" in out
    assert "configmap/mro-modelrollout-operator-dashboard" in out


# -- helm itself -----------------------------------------------------------------------


@pytest.mark.usefixtures("peering_crds")
def test_helm_installs_then_upgrades_to_peering_then_uninstalls(
    helm: str, control_plane: ControlPlane, namespace: str, cluster_objects: list[str]
) -> None:
    """A real `helm install`, the upgrade from standalone to peering that the chart
    promises is a plain upgrade, and an uninstall that leaves nothing behind."""
    release = f"h{uuid.uuid4().hex[:6]}"
    cluster_objects.append(f"app.kubernetes.io/instance={release}")
    name = f"{release}-modelrollout-operator"

    def run_helm(*args: str, values: Obj | None = None) -> str:
        argv = [helm, *args, "--kubeconfig", str(control_plane.kubeconfig), "-n", namespace]
        values_args = ["--values", "-"] if values is not None else []
        result = subprocess.run(
            [*argv, *values_args],
            input=yaml.safe_dump(values) if values is not None else None,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def get(*args: str) -> str:
        result = kubectl(control_plane, "get", *args, "-n", namespace, "-o", "name")
        return result.stdout.strip()

    watch = {"watchNamespaces": [namespace]}
    out = run_helm("install", release, str(CHART), values=watch)
    assert "STATUS: deployed" in out
    assert f"watching {namespace}" in out  # NOTES.txt
    assert get("deployment", name) == f"deployment.apps/{name}"

    peering = watch | {"replicas": 2, "highAvailability": {"mode": "peering"}}
    run_helm("upgrade", release, str(CHART), values=peering)
    assert get("deployment", name, "--ignore-not-found") == ""
    assert get("kopfpeering", "modelrollout-operator") == (
        "kopfpeering.kopf.dev/modelrollout-operator"
    )

    mine = f"app.kubernetes.io/instance={release}"

    def indexes() -> list[str]:
        result = kubectl(control_plane, "get", "pods", "-n", namespace, "-l", mine, "-o", "json")
        pods = json.loads(result.stdout)["items"]
        return sorted(p["metadata"]["labels"].get("apps.kubernetes.io/pod-index") for p in pods)

    # The label each pod's --priority comes from: one per pod, all distinct.
    procs.wait_until(lambda: indexes() == ["0", "1"], 60, "two pods with pod-index 0 and 1")

    run_helm("uninstall", release, "--wait")
    for kind in ("statefulset", "kopfpeering", "role", "rolebinding", "service", "serviceaccount"):
        assert get(kind, "-l", f"app.kubernetes.io/instance={release}") == "", kind
    for kind in ("clusterrole", "clusterrolebinding"):
        result = kubectl(
            control_plane, "get", kind, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        )
        assert result.stdout.strip() == "", kind


# -- RBAC, for real --------------------------------------------------------------------


def install_rbac(
    helm: str, cp: ControlPlane, namespace: str, values: Obj, cleanup: list[str]
) -> tuple[str, str]:
    """Apply the chart's ServiceAccount and RBAC; return (release, service account)."""
    manifests, release, _ = service_account_rbac(helm, namespace, values)
    cleanup.append(f"app.kubernetes.io/instance={release}")
    result = kubectl(cp, "apply", "-f", "-", input=manifests)
    assert result.returncode == 0, result.stderr
    return release, f"system:serviceaccount:{namespace}:{release}-modelrollout-operator"


def can(cp: ControlPlane, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else []
    result = kubectl(cp, "auth", "can-i", verb, resource, f"--as={user}", *where)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def eventually_can(cp: ControlPlane, user: str, verb: str, resource: str, ns: str | None) -> None:
    """RBAC changes reach the authorizer a moment after they are stored."""
    procs.wait_until(lambda: can(cp, user, verb, resource, ns), 10, f"{user} may {verb} {resource}")


ALLOWED = [
    ("get", "modelrollouts.rollouts.mlops.io"),
    ("watch", "modelrollouts.rollouts.mlops.io"),
    ("patch", "modelrollouts.rollouts.mlops.io"),
    ("patch", "modelrollouts.rollouts.mlops.io/status"),
    ("create", "events"),
    ("patch", "deployments.apps"),
    ("list", "deployments.apps"),  # watched: passes read them from memory
    ("watch", "deployments.apps"),
    ("get", "services"),
    ("get", "configmaps"),
    ("watch", "configmaps"),
    *(("patch", kind.resource) for kind in routing_kinds()),
    ("get", "jobs.batch"),
    ("create", "jobs.batch"),
    ("patch", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "pods"),
    ("get", "secrets/prom-token"),
]
DENIED = [
    ("create", "modelrollouts.rollouts.mlops.io"),
    ("delete", "modelrollouts.rollouts.mlops.io"),
    ("update", "modelrollouts.rollouts.mlops.io"),  # kopf and the operator only patch
    ("create", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("update", "deployments.apps"),  # replicas by server-side apply (patch) only
    ("patch", "services"),
    ("list", "services"),  # read by name only
    ("patch", "configmaps"),
    ("get", "pods"),
    ("delete", "pods"),
    ("list", "jobs.batch"),
    ("update", "jobs.batch"),
    ("list", "secrets"),
    ("get", "secrets/other-secret"),
    ("delete", "events"),
    *(("create", kind.resource) for kind in routing_kinds(created=False)),
    *(("update", kind.resource) for kind in routing_kinds()),
    ("create", "roles.rbac.authorization.k8s.io"),
]


def test_cluster_wide_rbac_allows_what_the_operator_does_and_no_more(
    helm: str, control_plane: ControlPlane, namespace: str, cluster_objects: list[str]
) -> None:
    values = {"prometheusSecrets": ["prom-token"]}
    _, user = install_rbac(helm, control_plane, namespace, values, cluster_objects)
    eventually_can(control_plane, user, "list", "modelrollouts.rollouts.mlops.io", None)
    for ns in (namespace, "default"):
        assert [a for a in ALLOWED if not can(control_plane, user, *a, ns)] == []
        assert [d for d in DENIED if can(control_plane, user, *d, ns)] == []
    assert can(control_plane, user, "watch", "customresourcedefinitions", None)
    assert not can(control_plane, user, "get", "customresourcedefinitions", None)
    assert not can(control_plane, user, "list", "namespaces", None)
    assert not can(control_plane, user, "list", "kopfpeerings.kopf.dev", namespace)


def test_namespaced_rbac_reaches_only_the_watched_namespace(
    helm: str, control_plane: ControlPlane, namespace: str, cluster_objects: list[str]
) -> None:
    values = {"watchNamespaces": [namespace], "prometheusSecrets": ["prom-token"]}
    _, user = install_rbac(helm, control_plane, namespace, values, cluster_objects)
    eventually_can(control_plane, user, "list", "modelrollouts.rollouts.mlops.io", namespace)
    assert [a for a in ALLOWED if not can(control_plane, user, *a, namespace)] == []
    assert [d for d in DENIED if can(control_plane, user, *d, namespace)] == []
    assert [a for a in ALLOWED if can(control_plane, user, *a, "default")] == []
    assert can(control_plane, user, "list", "modelrollouts.rollouts.mlops.io", namespace)
    assert not can(control_plane, user, "list", "modelrollouts.rollouts.mlops.io", None)
    assert can(control_plane, user, "watch", "namespaces", None)
    assert not can(control_plane, user, "get", "namespaces", None)


def _gateway_targets() -> list[Obj]:
    return [
        *objects.targets(),
        objects.http_route("model", "model-v1", "model-v2"),
        objects.gateway_rollout("model", "model-v1", "model-v2"),
    ]


def _http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return 0, ""


# The wait ends as soon as /healthz answers; the bound covers an interpreter start on a
# shared machine: importing kopf, kubernetes and the handlers is ~4 s of CPU, which
# took 30 s of wall time at a load of 15 on two cores.
OPERATOR_STARTUP_SECONDS = 120


@pytest.mark.parametrize("mode", ["standalone", "peering"])
def test_the_operator_runs_under_the_charts_rbac(
    helm: str,
    control_plane: ControlPlane,
    k8s: kubernetes.client.ApiClient,
    namespace: str,
    api: Api,
    spawn: Spawn,
    cluster_objects: list[str],
    request: pytest.FixtureRequest,
    mode: str,
) -> None:
    """The operator as the chart's ServiceAccount, watching one namespace, with the
    chart's health and metrics flags: a rollout progresses, and nothing is forbidden."""
    values: Obj = {"watchNamespaces": [namespace], "highAvailability": {"mode": mode}}
    if mode == "peering":  # before the RBAC, which holds a KopfPeering (not only when
        request.getfixturevalue("peering_crds")  # an earlier test installed the CRDs)
    release, _ = install_rbac(helm, control_plane, namespace, values, cluster_objects)
    account = f"{release}-modelrollout-operator"
    peering_args: list[str] = []
    if mode == "peering":
        peering = render(helm, values, "--show-only", "templates/peering.yaml", release=release)
        assert kubectl(control_plane, "apply", "-f", "-", input=peering).returncode == 0
        peering_args = ["--peering=modelrollout-operator", "--priority=0"]
    user = f"system:serviceaccount:{namespace}:{account}"
    eventually_can(control_plane, user, "list", "modelrollouts.rollouts.mlops.io", namespace)
    eventually_can(control_plane, user, "watch", "customresourcedefinitions", None)

    core = kubernetes.client.CoreV1Api(k8s)
    request_body = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request_body)
    kubeconfig = control_plane.kubeconfig_for_token(token.status.token)

    metrics_port, health_port = procs.free_port(), procs.free_port()
    operator = spawn(
        "operator-chart-rbac",
        [
            sys.executable, "-m", "modelrollout", "--log-format=json",
            f"--liveness=http://127.0.0.1:{health_port}/healthz",
            f"--metrics-port={metrics_port}",
            f"--namespace={namespace}",
            *peering_args,
        ],
        env={"KUBECONFIG": str(kubeconfig)},
    )  # fmt: skip
    health = f"http://127.0.0.1:{health_port}/healthz"
    procs.wait_until(
        lambda: _http_get(health)[0] == 200, OPERATOR_STARTUP_SECONDS, "kopf's /healthz", operator
    )

    api.apply(*_gateway_targets())
    api.wait_rollout("model", lambda o: phase(o) == "Progressing", "phase Progressing")
    api.wait_events("model", lambda e: e["type"] == "Normal", "a Normal event (events: create)")
    status, page = _http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    assert "modelrollout_info{" in page
    if mode == "peering":
        custom = kubernetes.client.CustomObjectsApi(k8s)
        peering_obj = custom.get_namespaced_custom_object(
            "kopf.dev", "v1", namespace, "kopfpeerings", "modelrollout-operator"
        )
        assert peering_obj.get("status"), "the operator never registered in its peering"

    log = operator.log.read_text()
    for forbidden in ("Forbidden", "forbidden", "Not enough permissions"):
        assert forbidden not in log, f"{forbidden!r} in the operator's log:\n{operator.tail(60)}"
    assert operator.alive(), operator.tail()


# -- kustomize -------------------------------------------------------------------------


def test_the_kustomize_base_is_the_rendered_chart(helm: str) -> None:
    env = {**os.environ, "HELM_BIN": helm}
    result = subprocess.run([str(RENDER_BASE), "--stdout"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    committed = (MANIFESTS / "base" / "operator.yaml").read_text()
    assert committed == result.stdout, "stale manifests/base: run hack/helm/render-base.sh"
    crd = (ROOT / "crds" / "rollouts.mlops.io_modelrollouts.yaml").read_text()
    assert (MANIFESTS / "base" / "crd.yaml").read_text() == crd


@pytest.fixture
def kustomize_install(control_plane: ControlPlane) -> Iterator[Callable[[], str]]:
    """`kubectl apply -k manifests/`, removed afterwards, except the CRD: the session's
    other tests use it, and deleting it would delete their rollouts."""

    def apply() -> str:
        result = kubectl(control_plane, "apply", "-k", str(MANIFESTS))
        assert result.returncode == 0, result.stderr
        return result.stdout

    yield apply
    kubectl(control_plane, "delete", "namespace", "modelrollout-system", "--wait=false",
            "--ignore-not-found")  # fmt: skip
    kubectl(control_plane, "delete", "clusterrole,clusterrolebinding", "modelrollout-operator",
            "--ignore-not-found")  # fmt: skip


def test_kubectl_apply_k_manifests_installs_the_operator(
    control_plane: ControlPlane, kustomize_install: Callable[[], str]
) -> None:
    out = kustomize_install()
    assert "customresourcedefinition.apiextensions.k8s.io/modelrollouts.rollouts.mlops.io" in out
    ns = "modelrollout-system"
    for kind, name, where in [
        ("namespace", ns, []),
        ("serviceaccount", "modelrollout-operator", ["-n", ns]),
        ("deployment", "modelrollout-operator", ["-n", ns]),
        ("service", "modelrollout-operator-metrics", ["-n", ns]),
        ("clusterrole", "modelrollout-operator", []),
        ("clusterrolebinding", "modelrollout-operator", []),
    ]:
        result = kubectl(control_plane, "get", kind, name, *where, "-o", "name")
        assert result.returncode == 0, f"{kind}/{name}: {result.stderr}"
    # The namespace enforces the restricted Pod Security Standard, so a pod exists only
    # if the operator's pod template meets it (kwok runs it without running anything).
    selector = "app.kubernetes.io/name=modelrollout-operator"

    def pods() -> list[str]:
        out = kubectl(control_plane, "get", "pods", "-n", ns, "-l", selector, "-o", "name")
        return out.stdout.split()

    procs.wait_until(lambda: bool(pods()), 60, "the operator's pod (Pod Security admission)")
    # Applying again changes nothing, the CRD included: GitOps tools see no drift.
    again = kustomize_install().splitlines()
    assert any("customresourcedefinition" in line for line in again)
    assert all(line.endswith(" unchanged") for line in again), again


def test_the_example_overlay_adapts_the_base(control_plane: ControlPlane) -> None:
    result = kubectl(control_plane, "kustomize", str(MANIFESTS / "overlays" / "example"))
    assert result.returncode == 0, result.stderr
    docs = documents(result.stdout)
    assert only(docs, "Namespace")["metadata"]["name"] == "ml-platform"
    deployment = only(docs, "Deployment")
    assert deployment["metadata"]["namespace"] == "ml-platform"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/mlops/modelrollout-operator:0.1.0"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    binding = only(docs, "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "ml-platform"
    rules = only(docs, "ClusterRole")["rules"]
    assert rules[-1]["resourceNames"] == ["prometheus-token"]
