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
  (seconds) and `.../feature-shift` (`amount=1.5,age=-1` or JSON, in stds). Given as
  flags at start, and sent to POST /admin/faults whenever they change. A Deployment's
  template annotations reach its new pods; annotating pods changes running ones.

A process is published once it answers /healthz: as a Prometheus file_sd group with
labels namespace, deployment and pod; through `endpoints(namespace, deployment)`; and,
given `state_file`, as JSON rewritten atomically on every change:

    {"pid": <supervisor pid>, "updated": <unix time>,
     "backends": [{"namespace": ..., "deployment": ..., "pod": ..., "version": "v2",
                   "url": "http://127.0.0.1:PORT", "pid": <server pid>,
                   "faults": {"errorRate": 0.0, "addedLatency": 0.0, "featureShift": {}}}]}

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
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Self

import kubernetes

from testbed import procs
from testbed.kubeconfig import client_from_kubeconfig
from testbed.paths import CACHE, ROOT

SERVER = ROOT / "e2e" / "modelserver" / "server.py"
VERSION_LABEL = "model.mlops.io/version"
FAULT_ANNOTATIONS = {
    "errorRate": "model.mlops.io/error-rate",
    "addedLatency": "model.mlops.io/added-latency",
    "featureShift": "model.mlops.io/feature-shift",
}
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


@dataclass
class Wanted:
    """A Ready pod that should have a server."""

    namespace: str
    deployment: str
    pod: str
    uid: str
    version: str
    faults: Obj


@dataclass
class Backend:
    """A model server process standing in for one pod."""

    namespace: str
    deployment: str
    pod: str
    uid: str
    version: str
    port: int
    proc: procs.Proc
    faults: Obj  # as last applied
    healthy: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def target(self) -> Obj:
        """Its Prometheus file_sd group."""
        labels = {"namespace": self.namespace, "deployment": self.deployment, "pod": self.pod}
        return {"targets": [f"127.0.0.1:{self.port}"], "labels": labels}

    def state(self) -> Obj:
        keys = ("namespace", "deployment", "pod", "version", "url", "faults")
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
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.namespaces, self.selector = list(namespaces), selector
        self.reference, self.state_file = reference, state_file
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
        """List pods; stop servers whose pod went (or that died); start new ones; apply
        changed faults; publish."""
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
        for backend in gone:
            if backend.proc.alive():
                log.info("pod %s/%s gone or not Ready: draining", backend.namespace, backend.pod)
            else:
                log.warning("server of pod %s exited:\n%s", backend.pod, backend.proc.tail(10))
        # Out of the endpoints now, stopped `drain` seconds later (and scraped until then):
        # a driver still holding the URL gets answers, as from a terminating pod.
        now = time.monotonic()
        self._draining += [(now + self.drain, b) for b in gone if b.proc.alive()]
        stopping = [b for due, b in self._draining if due <= now]
        self._draining = [(due, b) for due, b in self._draining if due > now]
        self._publish()
        _stop_servers([b for b in gone if not b.proc.alive()] + stopping)
        fresh = [self._spawn(w) for uid, w in wanted.items() if uid not in self._backends]
        with self._lock:
            self._backends.update((b.uid, b) for b in fresh)
        self._probe(fresh, HEALTH_TIMEOUT)
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
                if (warning := f"pod {pod}: {annotation}={text!r}: {error}") not in self._warned:
                    self._warned.add(warning)
                    log.warning("ignored %s", warning)
        result: Obj = faults.to_json()
        return result

    def _spawn(self, wanted: Wanted) -> Backend:
        port = procs.free_port()
        faults = wanted.faults
        argv: list[str | Path] = [
            sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port),
            "--version", wanted.version, "--seed", str(zlib.crc32(wanted.pod.encode())),
            "--error-rate", str(faults["errorRate"]),
            "--added-latency", str(faults["addedLatency"]),
            "--feature-shift", json.dumps(faults["featureShift"]),
            *(["--reference", str(self.reference)] if self.reference else []),
        ]  # fmt: skip
        proc = procs.spawn(f"modelserver-{wanted.pod}", argv)
        log.info("pod %s/%s: %s on port %d", wanted.namespace, wanted.pod, wanted.version, port)
        return Backend(
            wanted.namespace, wanted.deployment, wanted.pod, wanted.uid, wanted.version,
            port, proc, faults,
        )  # fmt: skip

    def _probe(self, backends: list[Backend], timeout: float) -> None:
        """Mark healthy those answering /healthz within `timeout` (at least one try)."""
        deadline = time.monotonic() + timeout
        waiting = [b for b in backends if b.proc.alive()]
        while waiting:
            for backend in waiting:
                backend.healthy = _http(f"{backend.url}/healthz") is not None
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
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(os.environ.get("KUBECONFIG") or CACHE / "kubeconfig"),
        help="default: $KUBECONFIG, else .cache/kubeconfig (make cluster-up)",
    )
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
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: backends.close())
        backends.run()  # in the main thread, which outlives the servers


if __name__ == "__main__":
    main()
