"""Fixtures for integration tests: the operator as a real process, and API helpers."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import kubernetes
import pytest
import yaml

from testbed import ControlPlane, procs
from testbed.helm import helm_binary, service_account_rbac
from testbed.paths import ROOT, MissingPrerequisite, in_ci

GROUP, VERSION, PLURAL = "rollouts.mlops.io", "v1alpha1", "modelrollouts"
ACTION = "rollouts.mlops.io/action"
ROUTES = {
    "httproute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "virtualservice": ("networking.istio.io", "v1", "virtualservices"),
}
Obj = dict[str, Any]
PEERING_CRDS = Path(__file__).parents[2] / "charts/modelrollout-operator/charts/kopf-peering/crds"


@dataclass
class Api:
    """The few calls the tests make, against the admin client, in one namespace."""

    control_plane: ControlPlane
    client: kubernetes.client.ApiClient
    namespace: str

    def apply(self, *manifests: Obj) -> None:
        docs = "\n---\n".join(yaml.safe_dump(m) for m in manifests)
        self.control_plane.apply(docs + "\n", "-n", self.namespace)

    def rollout(self, name: str) -> Obj:
        custom = kubernetes.client.CustomObjectsApi(self.client)
        obj: Obj = custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return obj

    def get(self, kind: str, name: str) -> Obj:
        out = self.control_plane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json")
        obj: Obj = json.loads(out)
        return obj

    def annotate(self, name: str, action: str) -> None:
        self.control_plane.kubectl(
            "annotate", "mro", name, f"{ACTION}={action}", "--overwrite", "-n", self.namespace
        )

    def patch_spec(self, name: str, spec: Obj) -> None:
        self.control_plane.kubectl(
            "patch", "mro", name, "-n", self.namespace, "--type=merge",
            "-p", json.dumps({"spec": spec}),
        )  # fmt: skip

    def events(self, name: str) -> list[Obj]:
        core = kubernetes.client.CoreV1Api(self.client)
        items = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [
            {"type": e.type, "reason": e.reason, "message": e.message, "count": e.count}
            for e in items
        ]

    def wait_events(
        self, name: str, predicate: Callable[[Obj], bool], what: str, timeout: float = 10.0
    ) -> list[Obj]:
        """The matching events, once there is one: kopf posts events after the status write."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [e for e in self.events(name) if predicate(e)]
            if matching:
                return matching
            if time.monotonic() > deadline:
                raise AssertionError(f"no event {what}; events: {self.events(name)}")
            time.sleep(0.2)

    def wait_rollout(
        self, name: str, predicate: Callable[[Obj], bool], what: str, timeout: float = 30.0
    ) -> Obj:
        deadline = time.monotonic() + timeout
        obj = self.rollout(name)
        while not predicate(obj):
            if time.monotonic() > deadline:
                status = json.dumps(obj.get("status"), indent=1)
                raise AssertionError(f"timed out waiting for {what}; status:\n{status}")
            time.sleep(0.2)
            obj = self.rollout(name)
        return obj

    def wait_phase(self, name: str, *phases: str, timeout: float = 60.0) -> Obj:
        return self.wait_rollout(name, lambda o: phase(o) in phases, " or ".join(phases), timeout)


@pytest.fixture
def api(control_plane: ControlPlane, k8s: kubernetes.client.ApiClient, namespace: str) -> Api:
    return Api(control_plane, k8s, namespace)


# The test bed's servers listen on loopback; the operator's default admits Services only.
LOOPBACK_ALLOWED = {"MODELROLLOUT_ALLOWED_ADDRESSES": "127.0.0.0/8"}


@dataclass
class Operator:
    """`python -m modelrollout` as a real process, which tests may kill and restart."""

    control_plane: ControlPlane
    spawn: Callable[..., procs.Proc]
    namespaces: list[str]
    kubeconfig: Path
    args: list[str] = field(default_factory=list)
    runs: list[procs.Proc] = field(default_factory=list)
    metrics_port: int = field(default_factory=procs.free_port)
    env: dict[str, str] = field(default_factory=lambda: dict(LOOPBACK_ALLOWED))

    @property
    def proc(self) -> procs.Proc:
        return self.runs[-1]

    def start(self) -> procs.Proc:
        watch = [arg for ns in self.namespaces for arg in ("-n", ns)]
        self.runs.append(
            self.spawn(
                "operator",
                [
                    sys.executable,
                    "-m",
                    "modelrollout",
                    "--log-format",
                    "json",
                    "--metrics-port",
                    str(self.metrics_port),
                    *watch,
                    *self.args,
                ],
                env={"KUBECONFIG": str(self.kubeconfig), **self.env},
            )
        )
        return self.proc

    def metrics(self) -> str:
        """The operator's /metrics page."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as when a node dies."""
        assert self.proc.popen is not None
        self.proc.popen.send_signal(signal.SIGKILL)
        self.proc.popen.wait(timeout=10)

    def restart_after_kill(self) -> None:
        self.kill()
        self.start()


PROMETHEUS_SECRETS = ["prometheus-auth"]  # the Secrets tests reference for credentials


@pytest.fixture(scope="session")
def helm() -> str:
    try:
        return helm_binary()
    except MissingPrerequisite as error:
        if in_ci():
            pytest.fail(f"prerequisite missing under CI: {error}", pytrace=False)
        pytest.skip(f"prerequisite missing: {error}")


def chart_service_account(
    control_plane: ControlPlane,
    helm: str,
    namespaces: list[str],
    workdir: Path,
    extra_values: Obj | None = None,
) -> tuple[Path, str]:
    """Install the chart's ServiceAccount and RBAC for `namespaces`; return a
    kubeconfig holding that ServiceAccount's token, and the release's label."""
    values = {"watchNamespaces": namespaces, "prometheusSecrets": PROMETHEUS_SECRETS}
    values |= extra_values or {}
    manifests, release, account = service_account_rbac(helm, namespaces[0], values)
    control_plane.apply(manifests)
    user = f"system:serviceaccount:{namespaces[0]}:{account}"
    procs.wait_until(
        lambda: control_plane.kubectl(
            "auth", "can-i", "list", "modelrollouts.rollouts.mlops.io", f"--as={user}",
            "-n", namespaces[-1],
        ).strip() == "yes",
        10,
        "the chart's RBAC to reach the authorizer",
    )  # fmt: skip
    token = control_plane.kubectl(
        "create", "token", account, "-n", namespaces[0], "--duration=2h"
    ).strip()
    path = control_plane.kubeconfig_for_token(token, workdir / f"{release}.kubeconfig")
    return path, f"app.kubernetes.io/instance={release}"


class OperatorFactory(Protocol):
    def __call__(
        self,
        namespaces: list[str],
        *,
        values: Obj | None = None,
        args: list[str] | None = None,
        like: Operator | None = None,
    ) -> Operator: ...


@pytest.fixture
def operator_factory(
    control_plane: ControlPlane,
    spawn: Callable[..., procs.Proc],
    helm: str,
    tmp_path: Path,
) -> Iterator[OperatorFactory]:
    """The operator as a real process, under the chart's ServiceAccount and RBAC
    installed with `values`; `like` runs another replica under an earlier one's."""
    made: list[Operator] = []
    releases: list[str] = []

    def make(
        namespaces: list[str],
        *,
        values: Obj | None = None,
        args: list[str] | None = None,
        like: Operator | None = None,
    ) -> Operator:
        if like is None:
            kubeconfig, release = chart_service_account(
                control_plane, helm, namespaces, tmp_path, values
            )
            releases.append(release)
        else:
            kubeconfig = like.kubeconfig
        op = Operator(control_plane, spawn, namespaces, kubeconfig, list(args or []))
        op.start()
        made.append(op)
        return op

    yield make
    for release in releases:  # the namespaced objects go with their namespace
        control_plane.kubectl("delete", "clusterrole,clusterrolebinding", "-l", release)
    for op in made:
        code = op.proc.popen.poll() if op.proc.popen else None
        if code not in (None, 0, -signal.SIGKILL):
            pytest.fail(f"the operator died during the test:\n{op.proc.tail()}")


@pytest.fixture(scope="session")
def peering_crds(control_plane: ControlPlane) -> None:
    """kopf's peering CRDs, as the chart's kopf-peering subchart installs them."""
    control_plane.install_crds(PEERING_CRDS)


@pytest.fixture
def operator(operator_factory: OperatorFactory, namespace: str) -> Operator:
    """The operator watching the test's namespace."""
    return operator_factory([namespace])


class RouteRecorder:
    """Watches one routing object and records every version the API server stored,
    to prove what was written and how many writes it took."""

    def __init__(self, api: Api, kind: str, name: str, read: Callable[[Obj], Any]) -> None:
        self.api, self.kind, self.name, self.read = api, kind, name, read
        self.versions: list[Any] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        group, version, plural = ROUTES[self.kind]
        custom = kubernetes.client.CustomObjectsApi(self.api.client)
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(
                custom.list_namespaced_custom_object,
                group,
                version,
                self.api.namespace,
                plural,
                field_selector=f"metadata.name={self.name}",
                timeout_seconds=600,
            ):
                if self._stop.is_set():
                    break
                self.versions.append(self.read(event["object"]))
        except Exception as error:  # the test's namespace going away cuts the stream
            if not self._stop.is_set():
                self.error = error
        finally:
            watch.stop()

    def stop(self) -> None:
        self._stop.set()

    def wait_for(self, expected: Any, timeout: float) -> None:
        """Wait until the last version seen is `expected`: a write that follows the
        status (the operator records its intent first, then acts) may land after a
        test has seen the phase it waits for."""
        deadline = time.monotonic() + timeout
        while not (self.versions and self.versions[-1] == expected):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.kind} {self.name}: {expected} never written; saw {self.distinct()}"
                )
            time.sleep(0.1)

    def distinct(self) -> list[Any]:
        """The versions seen, repeats folded; raises if the watch broke mid-test."""
        if self.error is not None:
            raise AssertionError(f"the watch of {self.kind} {self.name} broke: {self.error}")
        out: list[Any] = []
        for value in self.versions:
            if not out or out[-1] != value:
                out.append(value)
        return out


def condition(obj: Obj, type: str) -> Obj | None:
    conditions = (obj.get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type), None)


def phase(obj: Obj) -> str | None:
    result: str | None = (obj.get("status") or {}).get("phase")
    return result


def story(obj: Obj) -> str:
    """The rollout's message and history, for an assertion that failed on its phase."""
    status = obj.get("status") or {}
    lines = [f"phase {status.get('phase')}: {status.get('message')}"]
    for entry in status.get("history", []):
        lines.append(
            f"  {entry.get('time')} stage {entry.get('stage')} {entry.get('from')} -> "
            f"{entry.get('to')} {entry.get('reason')}: {entry.get('message')}"
        )
    drift = status.get("drift") or {}
    for row in drift.get("features") or []:  # what a surprising drift verdict rested on
        lines.append(
            f"  drift {row.get('feature')}: psi {row.get('psi')} critical "
            f"{row.get('criticalValue')} samples {row.get('candidateSamples')} {row.get('verdict')}"
        )
    return "\n".join(lines)


def stage(obj: Obj) -> int:
    return int((obj.get("status") or {}).get("stage", 0))


SECRET_PATH = "/hook/s3cret-token"  # a receiver's URL path is often its token


@dataclass
class Listener:
    """A receiver process and what it recorded."""

    url: str
    record: Path
    proc: procs.Proc

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["kind"] == "request"]

    def answered(self) -> list[tuple[str, int]]:
        """(notification id, status answered) per request, in arrival order."""
        return [(_id_of(json.loads(r["body"])), r["status"]) for r in self.requests()]


def _id_of(body: dict[str, Any]) -> str:
    return str(body.get("id") or body["text"])


@pytest.fixture
def receiver(spawn: Callable[..., procs.Proc], tmp_path: Path) -> Callable[..., Listener]:
    """`receiver(*flags)` starts `python -m testbed.receiver` on a free port."""

    def start(*flags: str) -> Listener:
        port = procs.free_port()
        record = tmp_path / f"receiver-{port}.jsonl"
        argv = [sys.executable, "-m", "testbed.receiver", "--port", str(port)]
        proc = spawn(
            "receiver",
            [*argv, "--record", str(record), *flags],
            env={"PYTHONPATH": str(ROOT / "tests")},
        )
        procs.wait_until(
            lambda: "listening on" in proc.log.read_text(), 30, "the receiver to listen", proc
        )
        return Listener(f"http://127.0.0.1:{port}{SECRET_PATH}", record, proc)

    return start
