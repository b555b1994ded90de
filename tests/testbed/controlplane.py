"""A real control plane on loopback: etcd, kube-apiserver (TLS + RBAC),
kube-controller-manager, kube-scheduler, and kwok with a few fake Nodes.

Controllers run as in a cluster (Deployments make ReplicaSets make Pods, garbage
collection, namespace deletion, ServiceAccounts, tokens); the scheduler binds Pods to
the fake Nodes and kwok plays their kubelet, so Pods go Running and Ready and Deployments
report ready/available replicas, and a Job's pods end as their annotations say
(kwok-pod-stages.yaml). No container ever runs: a Pod's containers are fiction.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from testbed import audit, procs
from testbed.binaries import ensure_binaries, ensure_crds
from testbed.kubeconfig import cert_user, client_from_kubeconfig, token_user, write_kubeconfig
from testbed.pki import Pki, make_pki

# kwok manages only the Nodes carrying this annotation (it never touches other Nodes).
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODE_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti"}
# Pod IPs kwok hands out; apart from the service range (10.0.0.0/16). Never routed.
POD_CIDR = "10.244.0.1/16"
NODE_LEASE_SECONDS = 40  # a kubelet's default
# The Pod stages kwok plays (Running and Ready; Job pods ending as their annotations say).
KWOK_POD_STAGES = Path(__file__).with_name("kwok-pod-stages.yaml")


class ControlPlane:
    """The processes above. Use `start()`/`stop()` or as a context manager."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        *,
        kubeconfig: Path | None = None,
        detached: bool = False,
        log_id: str | None = None,
        nodes: int = 3,
    ) -> None:
        self.bin_dir = bin_dir or ensure_binaries()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="testbed-cp-"))
        self.kubeconfig = kubeconfig or self.workdir / "kubeconfig"
        self.pki = Pki(self.workdir / "pki")
        self.detached = detached
        self.log_id = log_id
        self.etcd_port = 0
        self.port = 0
        self.controller_manager_port = 0
        self.scheduler_port = 0
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.procs: list[procs.Proc] = []
        self._commands: dict[str, tuple[list[Any], dict[str, str] | None]] = {}

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> Self:
        make_pki(self.pki.dir)
        self.etcd_port, peer_port, self.port = (procs.free_port() for _ in range(3))
        etcd_url, peer_url = (f"http://127.0.0.1:{p}" for p in (self.etcd_port, peer_port))
        etcd = self._spawn(
            "etcd",
            [
                self.bin_dir / "etcd",
                "--name=testbed",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        procs.wait_until(lambda: _http_ok(f"{etcd_url}/health"), timeout, "etcd /health", etcd)
        pki = self.pki
        apiserver = self._spawn(
            "kube-apiserver",
            [
                self.bin_dir / "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/16",  # thousands of Services (bench-scale)
                "--profiling=false",
                *audit.apiserver_flags(self.workdir, self.port),  # if $TESTBED_AUDIT_DIR
            ],
        )
        write_kubeconfig(self.kubeconfig, self.server, pki.ca_cert, self._admin_user())
        procs.wait_until(self.ready, timeout, "kube-apiserver /readyz", apiserver)
        self._start_controllers(timeout)
        return self

    def _start_controllers(self, timeout: float) -> None:
        """kube-controller-manager, kube-scheduler and kwok; then fake Nodes, Ready."""
        pki = self.pki
        self.controller_manager_port, self.scheduler_port = procs.free_port(), procs.free_port()
        kcm_config, scheduler_config, kwok_config = (
            write_kubeconfig(self.workdir / f"{name}.kubeconfig", self.server, pki.ca_cert, user)
            for name, user in (
                (
                    "kube-controller-manager",
                    cert_user(pki.controller_manager_cert, pki.controller_manager_key),
                ),
                ("kube-scheduler", cert_user(pki.scheduler_cert, pki.scheduler_key)),
                ("kwok", self._admin_user()),
            )
        )
        # Both serve /healthz etc. over HTTPS on a loopback port, with our CA-signed cert
        # (its SAN is 127.0.0.1) so the readiness probe below verifies TLS too.
        # Client rate limits for kube-controller-manager and kube-scheduler. Their
        # defaults (20 and 50 requests/s, bursts of 30 and 100) queue the Deployment and
        # ReplicaSet status updates behind the creations and Events of every other
        # object: with 100 Deployments created at once, a Deployment reported its ready
        # replica a median 44 s after its Pod was Ready (tests/bench/scale.py). A real
        # cluster's controllers are not that far behind; the API server is on loopback.
        client_limits = ["--kube-api-qps=1000", "--kube-api-burst=2000"]
        serving = [
            "--bind-address=127.0.0.1",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            "--leader-elect=false",
            "--profiling=false",
        ]
        kcm = self._spawn(
            "kube-controller-manager",
            [
                self.bin_dir / "kube-controller-manager",
                f"--kubeconfig={kcm_config}",
                f"--secure-port={self.controller_manager_port}",
                *serving,
                "--controllers=*",  # every on-by-default controller
                "--use-service-account-credentials",  # each controller with its own RBAC
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                *client_limits,
            ],
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                self.bin_dir / "kube-scheduler",
                f"--kubeconfig={scheduler_config}",
                f"--secure-port={self.scheduler_port}",
                *serving,
                *client_limits,
            ],
        )
        kwok_home = self.workdir / "kwok-home"  # so a ~/.kwok/kwok.yaml is never read
        kwok_home.mkdir(exist_ok=True)
        kwok = self._spawn(
            "kwok",
            [
                self.bin_dir / "kwok",
                f"--kubeconfig={kwok_config}",
                f"--config={KWOK_POD_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                # Heartbeat through Leases (renewed every 10s), as kubelets do; without
                # one, kwok posts node status too rarely for the node-lifecycle
                # controller's 50s grace period, which then marks every Pod NotReady.
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                # No --server-address / --node-port: kwok's HTTP server stays off.
            ],
            env={"HOME": str(kwok_home)},
        )
        self._create_fake_nodes()
        ctx = self._tls_context(client_cert=False)
        for proc, port, path in (
            (kcm, self.controller_manager_port, "healthz"),
            (scheduler, self.scheduler_port, "readyz"),
        ):
            url = f"https://127.0.0.1:{port}/{path}"
            procs.wait_until(lambda u=url: _http_ok(u, ctx), timeout, f"{proc.name} {url}", proc)
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            procs.wait_until(
                lambda: self._nodes_ready(core),
                timeout,
                f"kwok to make {self.node_names} Ready",
                kwok,
            )
            # Made by kube-controller-manager's serviceaccount controller: proof it runs.
            procs.wait_until(
                lambda: exists(lambda: core.read_namespaced_service_account("default", "default")),
                timeout,
                "the `default` ServiceAccount (kube-controller-manager)",
                kcm,
            )

    def _create_fake_nodes(self) -> None:
        with self.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            for name in self.node_names:
                node = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {KWOK_NODE_ANNOTATION: "fake"},
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                        },
                    },
                    # Nodes, unlike most kinds, keep the status they are created with.
                    "status": {"capacity": FAKE_NODE_CAPACITY, "allocatable": FAKE_NODE_CAPACITY},
                }
                core.create_node(node)

    def _nodes_ready(self, core: kubernetes.client.CoreV1Api) -> bool:
        ready = {
            node.metadata.name
            for node in core.list_node(label_selector="type=kwok").items
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or ())
        }
        return ready >= set(self.node_names)

    def _spawn(self, name: str, argv: list[Any], env: dict[str, str] | None = None) -> procs.Proc:
        proc = procs.spawn(name, argv, env=env, detached=self.detached, log_id=self.log_id)
        self.procs.append(proc)
        self._commands[name] = (argv, env)
        return proc

    def _admin_user(self) -> dict[str, Any]:
        return cert_user(self.pki.admin_cert, self.pki.admin_key)

    def _tls_context(self, client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        if client_cert:
            ctx.load_cert_chain(self.pki.admin_cert, self.pki.admin_key)
        return ctx

    def ready(self) -> bool:
        """True if /readyz answers 200 over verified TLS with the admin certificate."""
        return _http_ok(f"{self.server}/readyz", self._tls_context())

    def stop(self) -> None:
        for proc in reversed(self.procs):
            procs.stop(proc)
        self.procs.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- faults: a component restarted on its ports, with its data --------------------

    def restart_etcd(self, *, kill: bool = False, wait: bool = True, timeout: float = 90.0) -> None:
        """Stop etcd (SIGTERM, or SIGKILL with `kill`) and start it again on the same
        ports and data directory; with `wait`, return once `etcd_healthy()`."""
        self._restart("etcd", kill, self.etcd_healthy if wait else None, timeout)

    def restart_apiserver(
        self, *, kill: bool = False, wait: bool = True, timeout: float = 90.0
    ) -> None:
        """Stop kube-apiserver and start it again on the same port, against the same
        etcd; with `wait`, return once `ready()`. Clients and controllers reconnect."""
        self._restart("kube-apiserver", kill, self.ready if wait else None, timeout)

    def etcd_healthy(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.etcd_port}/health")

    def _restart(
        self, name: str, kill: bool, ready: Callable[[], bool] | None, timeout: float
    ) -> None:
        index = next(i for i, p in enumerate(self.procs) if p.name == name)
        (procs.kill if kill else procs.stop)(self.procs[index])
        argv, env = self._commands[name]
        proc = procs.spawn(name, argv, env=env, detached=self.detached, log_id=self.log_id)
        self.procs[index] = proc
        if ready is not None:
            procs.wait_until(ready, timeout, f"{name} after a restart", proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new admin (system:masters) client that verifies the server certificate."""
        return client_from_kubeconfig(self.kubeconfig)

    def kubeconfig_for_token(self, token: str, path: Path | None = None) -> Path:
        """Write a kubeconfig that authenticates with a bearer (e.g. ServiceAccount) token."""
        path = path or Path(tempfile.mkstemp(prefix="kubeconfig-", dir=self.workdir)[1])
        return write_kubeconfig(path, self.server, self.pki.ca_cert, token_user(token))

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run the built kubectl as admin; raise with its stderr on failure."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def apply(self, path_or_yaml: Path | str, *args: str) -> str:
        """`kubectl apply --server-side` a file, a folder or a YAML string."""
        if isinstance(path_or_yaml, Path) or "\n" not in path_or_yaml:
            return self.kubectl("apply", "--server-side", "-f", str(path_or_yaml), *args)
        return self.kubectl("apply", "--server-side", "-f", "-", *args, input=path_or_yaml)

    def install_crds(self, path: Path, timeout: float = 60.0) -> None:
        """Apply CRDs from a file or folder and wait until all are Established."""
        self.apply(path, "--force-conflicts")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kubectl(
                    "wait",
                    "--for=condition=Established",
                    "-f",
                    str(path),
                    f"--timeout={timeout:.0f}s",
                )
                break
            except RuntimeError as error:
                # a CRD read before its first status has no conditions yet: kubectl
                # says "accessor error" instead of waiting, so ask again
                if "accessor error" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        # Established comes before discovery serves the kinds: a client that asks for a
        # kind just then hears "no matches for kind". Wait until each is served.
        for name in _crd_names(path):
            while True:
                try:
                    self.kubectl("get", name, "-A", "-o", "name", "--request-timeout=10s")
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def install_gateway_and_istio_crds(self) -> None:
        """Gateway API v1 (standard channel) and Istio CRDs, as an operator expects them."""
        for folder in ensure_crds().values():
            self.install_crds(folder)

    # -- detached clusters (python -m testbed) ---------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "workdir": str(self.workdir),
            "bin_dir": str(self.bin_dir),
            "procs": [{"name": p.name, "pid": p.pid, "log": str(p.log)} for p in self.procs],
        }

    @classmethod
    def attach(cls, state: dict[str, Any]) -> ControlPlane:
        """A handle on a control plane started by another process (for status/down)."""
        cp = cls(
            Path(state["bin_dir"]), Path(state["workdir"]), kubeconfig=Path(state["kubeconfig"])
        )
        cp._own_workdir = False
        cp.port = int(state["server"].rsplit(":", 1)[1])
        cp.procs = [procs.Proc(p["name"], p["pid"], Path(p["log"])) for p in state["procs"]]
        return cp


def exists(read: Callable[[], object]) -> bool:
    """Call `read` (a GET); False if it answers 404 Not Found, True if it succeeds."""
    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return False


def _crd_names(path: Path) -> list[str]:
    """`plural.group` of every CRD in a file or folder."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    return [
        str(doc["metadata"]["name"])
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
