"""Backend supervisor: a real model server process for every Ready pod, because kwok's
pods run nothing.

Which pods: in each watched namespace, every Pod owned by a Deployment (Pod ->
ReplicaSet -> Deployment owner references) that matches `selector` (a label selector;
default: no narrowing), while it is Ready and not being deleted. Bare Pods, Jobs and
StatefulSets never get one. A pod's `deployment` is that owner, never a label.

Each gets `e2e/modelserver/server.py --host 127.0.0.1 --port <free> --version V
--seed S [--reference R]` plus the fault flags, via `procs.spawn` (so it dies with us):

- V: the pod label `model.mlops.io/version`, else the Deployment name's last `-` part
  (fraud-v2 -> v2), else v1; only versions server.py knows (v1, v2) are taken;
- S: crc32 of the pod name, so a pod's error dice repeat;
- faults: pod annotations `model.mlops.io/error-rate` (0..1), `.../added-latency`
  (seconds), `.../feature-shift` (`amount=1.5,age=-1` or JSON, in stds) and
  `.../disagree` (0..1, answers the shadow comparator sees differ). Given as flags at
  start, and sent to POST /admin/faults whenever they change. A Deployment's template
  annotations reach its new pods; annotating pods changes running ones.

A pod whose container runs `modelrollout-shadow` (its `command`, as a user deploys the
shadow comparator) gets that comparator instead, with the container's `args` and its
literal `env` values, and:

- `--stable` and `--candidate` (or their MODELROLLOUT_SHADOW_* variables) naming a
  Service (`http://fraud-v1[.ns[.svc...]][:port][/prefix]`) resolved as a cluster's DNS
  and Service would: to one ready pod's server of the Deployments the Service selects,
  the one the fewest comparators use (so replicas spread over the pods). It starts once
  both sides have one, and is restarted when a chosen server leaves the endpoints. Any
  other URL is used as given;
- `--listen` and `--metrics-listen` on free loopback ports: the first is the pod's
  endpoint, the second its Prometheus target (and its /healthz);
- `--namespace` the pod's, unless given; `KUBECONFIG` the supervisor's `kubeconfig`
  (its credentials for `--follow-rollout`, as a pod's mounted ones would be).

A process is published once it answers /healthz: as a Prometheus file_sd group with
labels namespace, deployment and pod; through `endpoints(namespace, deployment)`; and,
given `state_file`, as JSON rewritten atomically on every change:

    {"pid": <supervisor pid>, "updated": <unix time>,
     "backends": [{"namespace": ..., "deployment": ..., "pod": ..., "version": "v2",
                   "serves": "model", "url": "http://127.0.0.1:PORT", "pid": <server pid>,
                   "faults": {"errorRate": 0.0, "addedLatency": 0.0, "featureShift": {},
                              "disagree": 0.0}}]}

(a comparator: `"serves": "shadow"`, `"version": null`, `"faults": {}`).

Pods are listed every `interval` seconds (a poll: no watch to freeze or resume). An
API error keeps the backends as they are. A server whose pod went leaves the endpoints at
once and is stopped (and unscraped) `drain` seconds later, as a terminating pod serves
on while endpoints catch up (a driver refreshes every half second).

    PYTHONPATH=tests python -m testbed.backends -n NS [-n NS2] [--selector SEL]
        [--reference FILE] [--targets-file FILE] [--state-file FILE] [--drain S]
        [--kubeconfig FILE]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import kubernetes

from testbed import procs
from testbed.kubeconfig import add_kubeconfig_argument, client_from_kubeconfig
from testbed.paths import ROOT

SERVER = ROOT / "e2e" / "modelserver" / "server.py"
VERSION_LABEL = "model.mlops.io/version"
FAULT_ANNOTATIONS = {
    "errorRate": "model.mlops.io/error-rate",
    "addedLatency": "model.mlops.io/added-latency",
    "featureShift": "model.mlops.io/feature-shift",
    "disagree": "model.mlops.io/disagree",
}
SHADOW_COMMAND = "modelrollout-shadow"
SHADOW_UPSTREAMS = ("stable", "candidate")  # flags whose Service URLs are resolved
HEALTH_TIMEOUT = 15.0  # seconds for a new server to answer /healthz

Obj = dict[str, Any]
Targets = Callable[[list[Obj]], None]
log = logging.getLogger("testbed.backends")


@functools.cache
def modelserver() -> ModuleType:
    """server.py as a module (it is a script, not a package): its versions, feature
    distributions and fault parsing, so nothing here copies them."""
    spec = importlib.util.spec_from_file_location("testbed_modelserver", SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class ShadowContainer:
    """A pod's `modelrollout-shadow` container: what its command line and env say."""

    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # the literal values (no valueFrom)


@dataclass
class Wanted:
    """A Ready pod that should have a server (a comparator, if it runs one)."""

    namespace: str
    deployment: str
    pod: str
    uid: str
    version: str | None  # None for a comparator
    faults: Obj
    shadow: ShadowContainer | None = None


@dataclass
class Backend:
    """A model server (or shadow comparator) process standing in for one pod."""

    namespace: str
    deployment: str
    pod: str
    uid: str
    version: str | None
    port: int
    proc: procs.Proc
    faults: Obj  # as last applied
    healthy: bool = False
    metrics_port: int | None = None  # a comparator's; a model server's metrics are on `port`
    upstreams: tuple[str, ...] = ()  # the servers a comparator's Service URLs resolved to

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def serves(self) -> str:
        return "model" if self.metrics_port is None else "shadow"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port or self.port}/healthz"

    def target(self) -> Obj:
        """Its Prometheus file_sd group."""
        labels = {"namespace": self.namespace, "deployment": self.deployment, "pod": self.pod}
        return {"targets": [f"127.0.0.1:{self.metrics_port or self.port}"], "labels": labels}

    def state(self) -> Obj:
        keys = ("namespace", "deployment", "pod", "version", "serves", "url", "faults")
        return {k: getattr(self, k) for k in keys} | {"pid": self.proc.pid}


class Backends:
    """Keeps one server per selected Ready pod; `start()` polls in a thread, `close()`
    stops it and every server."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespaces: Sequence[str],
        *,
        selector: str = "",
        reference: Path | None = None,
        targets: Targets | Path | None = None,
        state_file: Path | None = None,
        interval: float = 1.0,
        drain: float = 1.0,
        kubeconfig: Path | None = None,
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.namespaces, self.selector = list(namespaces), selector
        self.reference, self.state_file = reference, state_file
        self.kubeconfig = kubeconfig  # handed to comparators (for --follow-rollout)
        self.interval, self.drain = interval, drain
        self._targets = _file_writer(targets) if isinstance(targets, Path) else targets
        server = modelserver()
        buckets = server.load_reference(reference) if reference else server.default_buckets()
        self._numeric = list(buckets.numeric)  # feature-shift may name these
        self._backends: dict[str, Backend] = {}  # by pod uid
        self._draining: list[tuple[float, Backend]] = []  # (when to stop, unpublished)
        self._published: tuple[list[Obj], list[Obj]] | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what callers read --------------------------------------------------------------

    def backends(self) -> list[Backend]:
        """The published (healthy) backends, by namespace, deployment and pod."""
        with self._lock:
            ready = [b for b in self._backends.values() if b.healthy]
        return sorted(ready, key=lambda b: (b.namespace, b.deployment, b.pod))

    def endpoints(self, namespace: str, deployment: str) -> list[str]:
        """URLs of the Deployment's ready pods' servers, by pod name."""
        return [
            b.url for b in self.backends() if (b.namespace, b.deployment) == (namespace, deployment)
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name="backends", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        """Sync until `close()`. Servers are spawned and stopped in this thread: their
        PR_SET_PDEATHSIG fires when the spawning thread ends, so it must outlive them."""
        try:
            while not self._stop.is_set():
                self.sync()
                self._stop.wait(self.interval)
        finally:
            with self._lock:
                gone, self._backends = list(self._backends.values()), {}
            gone += [b for _, b in self._draining]
            self._draining = []
            self._publish()
            _stop_servers(gone)

    def close(self) -> None:
        """Stop syncing and stop every server (`run()` does, on its way out)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one pass -----------------------------------------------------------------------

    def sync(self) -> None:
        """List pods; stop servers whose pod went (or that died) and comparators whose
        upstream server went; start new model servers, then the comparators their
        servers let start; apply changed faults; publish."""
        try:
            wanted = {w.uid: w for ns in self.namespaces for w in self._wanted(ns)}
        except Exception as error:  # the API server's hiccup is not a reason to stop pods
            log.warning("listing pods failed, keeping the backends: %s", error)
            return
        with self._lock:
            gone = [
                b for uid, b in self._backends.items() if uid not in wanted or not b.proc.alive()
            ]
            for backend in gone:
                del self._backends[backend.uid]
            serving = {b.url for b in self._backends.values() if b.healthy}
            stale = [b for b in self._backends.values() if not set(b.upstreams) <= serving]
            for backend in stale:
                del self._backends[backend.uid]
        for backend in stale:
            log.info(
                "pod %s/%s: an upstream server left: restarting", backend.namespace, backend.pod
            )
        for backend in gone:
            if backend.proc.alive():
                log.info("pod %s/%s gone or not Ready: draining", backend.namespace, backend.pod)
            else:
                log.warning("server of pod %s exited:\n%s", backend.pod, backend.proc.tail(10))
        gone += stale
        # Out of the endpoints now, stopped `drain` seconds later (and scraped until then):
        # a driver still holding the URL gets answers, as from a terminating pod.
        now = time.monotonic()
        self._draining += [(now + self.drain, b) for b in gone if b.proc.alive()]
        stopping = [b for due, b in self._draining if due <= now]
        self._draining = [(due, b) for due, b in self._draining if due > now]
        self._publish()
        _stop_servers([b for b in gone if not b.proc.alive()] + stopping)
        fresh = [
            self._spawn(w)
            for uid, w in wanted.items()
            if uid not in self._backends and w.shadow is None
        ]
        with self._lock:
            self._backends.update((b.uid, b) for b in fresh)
        self._probe(fresh, HEALTH_TIMEOUT)
        comparators = []  # once the servers they resolve to are healthy
        for uid, w in wanted.items():
            if (
                uid not in self._backends
                and w.shadow is not None
                and (backend := self._spawn_shadow(w))
            ):
                with self._lock:
                    self._backends[uid] = backend  # counted by the next one's choice
                comparators.append(backend)
        self._probe(comparators, HEALTH_TIMEOUT)
        for uid, backend in list(self._backends.items()):
            if not backend.healthy:
                self._probe([backend], 0)
            elif wanted[uid].faults != backend.faults:
                self._apply_faults(backend, wanted[uid].faults)
        self._publish()

    def _wanted(self, namespace: str) -> list[Wanted]:
        # Pods before ReplicaSets: a pod's ReplicaSet always exists before the pod does.
        pods = list_json(self.core.list_namespaced_pod, namespace, label_selector=self.selector)
        owners = {
            rs["metadata"]["uid"]: owner
            for rs in list_json(self.apps.list_namespaced_replica_set, namespace)
            if (owner := _owner(rs, "Deployment"))
        }
        wanted = []
        for pod in pods:
            meta = pod["metadata"]
            deployment = owners.get(_owner(pod, "ReplicaSet", uid=True) or "")
            if deployment is None or not _ready(pod):
                continue
            shadow = _shadow_container(pod.get("spec") or {})
            if shadow is not None:
                wanted.append(
                    Wanted(namespace, deployment, meta["name"], meta["uid"], None, {}, shadow)
                )
                continue
            version = _version(meta.get("labels") or {}, deployment)
            faults = self._faults(meta["name"], meta.get("annotations") or {})
            wanted.append(Wanted(namespace, deployment, meta["name"], meta["uid"], version, faults))
        return wanted

    def _faults(self, pod: str, annotations: dict[str, str]) -> Obj:
        """The faults the annotations ask for, as server.py reports them; an unreadable
        annotation is ignored (and logged once)."""
        server = modelserver()
        faults = server.Faults()
        for key, annotation in FAULT_ANNOTATIONS.items():
            text = annotations.get(annotation)
            if text is None:
                continue
            try:
                value = server.parse_shift(text) if key == "featureShift" else float(text)
                faults = faults.updated({key: value}, self._numeric)
            except (ValueError, server.BadRequest) as error:
                self._warn(f"pod {pod}: ignored {annotation}={text!r}: {error}")
        result: Obj = faults.to_json()
        return result

    def _spawn(self, wanted: Wanted) -> Backend:
        port = procs.free_port()
        faults = wanted.faults
        assert wanted.version is not None
        argv: list[str | Path] = [
            sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port),
            "--version", wanted.version, "--seed", str(zlib.crc32(wanted.pod.encode())),
            "--error-rate", str(faults["errorRate"]),
            "--added-latency", str(faults["addedLatency"]),
            "--feature-shift", json.dumps(faults["featureShift"]),
            "--disagree", str(faults["disagree"]),
            *(["--reference", str(self.reference)] if self.reference else []),
        ]  # fmt: skip
        proc = procs.spawn(f"modelserver-{wanted.pod}", argv)
        log.info("pod %s/%s: %s on port %d", wanted.namespace, wanted.pod, wanted.version, port)
        return Backend(
            wanted.namespace, wanted.deployment, wanted.pod, wanted.uid, wanted.version,
            port, proc, faults,
        )  # fmt: skip

    def _spawn_shadow(self, wanted: Wanted) -> Backend | None:
        """The pod's comparator, its Service URLs resolved to servers; None while one
        has no ready server (the next pass tries again)."""
        assert wanted.shadow is not None
        args, env = list(wanted.shadow.args), dict(wanted.shadow.env)
        upstreams = []
        for name in SHADOW_UPSTREAMS:
            flag, variable = f"--{name}", f"MODELROLLOUT_SHADOW_{name.upper()}"
            given = _flag_value(args, flag) or env.get(variable)
            if given is None:
                continue  # the comparator says what it misses
            try:
                server = self._resolve(given, wanted.namespace)
            except Exception as error:  # an API hiccup: the next pass tries again
                log.warning("pod %s: resolving %s %s failed: %s", wanted.pod, flag, given, error)
                return None
            if server is None:
                self._warn(f"pod {wanted.pod}: {flag} {given}: no ready server behind it yet")
                return None
            if server != given:
                args += [flag, server]  # the last occurrence wins, and a flag over a variable
                parts = urllib.parse.urlsplit(server)
                upstreams.append(f"{parts.scheme}://{parts.netloc}")
        if _flag_value(args, "--namespace") is None and "MODELROLLOUT_SHADOW_NAMESPACE" not in env:
            args += ["--namespace", wanted.namespace]
        port, metrics_port = procs.free_port(), procs.free_port()
        args += ["--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
        path = os.pathsep.join(filter(None, [str(ROOT / "operator"), os.environ.get("PYTHONPATH")]))
        env["PYTHONPATH"] = path
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        argv = [sys.executable, "-m", "modelrollout.shadow", *args]
        proc = procs.spawn(f"shadow-{wanted.pod}", argv, env=env)
        log.info("pod %s/%s: shadow comparator on port %d", wanted.namespace, wanted.pod, port)
        return Backend(
            wanted.namespace, wanted.deployment, wanted.pod, wanted.uid, None, port, proc, {},
            metrics_port=metrics_port, upstreams=tuple(upstreams),
        )  # fmt: skip

    def _resolve(self, url: str, namespace: str) -> str | None:
        """A Service URL as the cluster would route it: to the ready server of the
        Deployments the Service selects that the fewest comparators use (the first of
        those), keeping the path prefix. An address that names no Service (an IP,
        localhost, https) is kept as given."""
        parts = urllib.parse.urlsplit(url)
        labels = (parts.hostname or "").split(".")
        if (
            parts.scheme != "http"
            or parts.hostname in (None, "localhost")
            or labels[-1].isdigit()
            or (len(labels) > 2 and labels[2] != "svc")
        ):
            return url
        where = labels[1] if len(labels) > 1 else namespace
        services = {
            s["metadata"]["name"]: s for s in list_json(self.core.list_namespaced_service, where)
        }
        selector = ((services.get(labels[0]) or {}).get("spec") or {}).get("selector") or {}
        deployments = sorted(
            d["metadata"]["name"]
            for d in list_json(self.apps.list_namespaced_deployment, where)
            if selector
            and selector.items() <= (d["spec"]["template"]["metadata"].get("labels") or {}).items()
        )
        servers = [u for d in deployments for u in self.endpoints(where, d)]
        if not servers:
            return None
        with self._lock:
            used = Counter(u for b in self._backends.values() for u in b.upstreams)
        return min(servers, key=used.__getitem__) + parts.path.rstrip("/")

    def _warn(self, warning: str) -> None:
        if warning not in self._warned:
            self._warned.add(warning)
            log.warning("%s", warning)

    def _probe(self, backends: list[Backend], timeout: float) -> None:
        """Mark healthy those answering /healthz within `timeout` (at least one try)."""
        deadline = time.monotonic() + timeout
        waiting = [b for b in backends if b.proc.alive()]
        while waiting:
            for backend in waiting:
                backend.healthy = _http(backend.health_url) is not None
            waiting = [b for b in waiting if not b.healthy and b.proc.alive()]
            if not waiting or time.monotonic() > deadline or self._stop.wait(0.05):
                return

    def _apply_faults(self, backend: Backend, faults: Obj) -> None:
        answer = _http(f"{backend.url}/admin/faults", faults)
        if answer is None:
            log.warning("pod %s: POST /admin/faults failed; retrying next pass", backend.pod)
            return
        backend.faults = answer
        log.info("pod %s: faults now %s", backend.pod, json.dumps(answer))

    def _publish(self) -> None:
        backends = self.backends()
        state = [b.state() for b in backends]
        targets = [b.target() for b in backends + [b for _, b in self._draining]]
        if (state, targets) == self._published:
            return
        self._published = state, targets
        if self._targets is not None:
            self._targets(targets)
        if self.state_file is not None:
            doc = {"pid": os.getpid(), "updated": time.time(), "backends": state}
            _write_atomically(self.state_file, json.dumps(doc, indent=1))


class StateFile:
    """A supervisor's state file, read by a driver in another process (re-read only
    when it changes); `endpoints` matches `Backends.endpoints`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._backends: list[Obj] = []

    def backends(self) -> list[Obj]:
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp != self._stamp:
                self._backends = json.loads(self.path.read_text())["backends"]
                self._stamp = stamp
        except (OSError, ValueError, KeyError):
            return []  # not written yet; it is replaced atomically, so never half a file
        return self._backends

    def endpoints(self, namespace: str, deployment: str) -> list[str]:
        return [
            b["url"]
            for b in self.backends()
            if (b["namespace"], b["deployment"]) == (namespace, deployment)
        ]


# -- helpers ----------------------------------------------------------------------------


def _stop_servers(backends: list[Backend]) -> None:
    """Stop servers side by side: each takes a tenth of a second or more to exit."""
    if backends:
        with ThreadPoolExecutor(len(backends)) as pool:
            list(pool.map(lambda b: b.proc.stop(), backends))


def list_json(list_call: Callable[..., Any], namespace: str, **kwargs: Any) -> list[Obj]:
    """A namespaced list call's items as plain JSON (the client's models are slow to build)."""
    response = list_call(namespace, _preload_content=False, _request_timeout=10, **kwargs)
    items: list[Obj] = json.loads(response.data)["items"]
    return items


def _owner(obj: Obj, kind: str, uid: bool = False) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or ():
        if ref.get("kind") == kind and ref.get("controller"):
            return str(ref["uid"] if uid else ref["name"])
    return None


def _ready(pod: Obj) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _shadow_container(spec: Obj) -> ShadowContainer | None:
    """The first container whose command runs the shadow comparator."""
    for container in spec.get("containers") or ():
        command = container.get("command") or []
        if command and Path(command[0]).name == SHADOW_COMMAND:
            env = tuple(
                (str(e["name"]), str(e["value"]))
                for e in container.get("env") or ()
                if "value" in e
            )
            return ShadowContainer(
                tuple(map(str, [*command[1:], *(container.get("args") or [])])), env
            )
    return None


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given to `flag` (`--flag V` or `--flag=V`), as argparse takes it."""
    found = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def _version(labels: dict[str, str], deployment: str) -> str:
    known = modelserver().MODELS
    for candidate in (labels.get(VERSION_LABEL), deployment.rsplit("-", 1)[-1]):
        if candidate in known:
            return str(candidate)
    return "v1"


_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _http(url: str, body: Obj | None = None) -> Any:
    """GET (or POST `body` as JSON); the decoded answer, None on any failure."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with _direct.open(request, timeout=1) as response:
            text = response.read()
    except (urllib.error.URLError, OSError):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _file_writer(path: Path) -> Targets:
    return lambda groups: _write_atomically(path, json.dumps(groups))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.backends", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-n", "--namespace", action="append", required=True, dest="namespaces")
    parser.add_argument("--selector", default="", help="label selector narrowing the pods")
    parser.add_argument("--reference", type=Path, help="drift reference for server.py")
    parser.add_argument("--targets-file", type=Path, help="Prometheus file_sd file to write")
    parser.add_argument("--state-file", type=Path, help="JSON state for `testbed.traffic`")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--drain", type=float, default=1.0, help="seconds a gone pod serves on")
    add_kubeconfig_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s backends: %(message)s")
    with client_from_kubeconfig(args.kubeconfig) as api:
        backends = Backends(
            api,
            args.namespaces,
            selector=args.selector,
            reference=args.reference,
            targets=args.targets_file,
            state_file=args.state_file,
            interval=args.interval,
            drain=args.drain,
            kubeconfig=args.kubeconfig,
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: backends.close())
        backends.run()  # in the main thread, which outlives the servers


if __name__ == "__main__":
    main()
