"""`make bench-scale`: many rollouts on one operator replica, and 200 beside Flagger.

N ModelRollouts in 20 namespaces, each with its two Deployments, two Services and an
HTTPRoute, two metrics (error rate with an abort bound, p99 latency with an SLO) and
a drift gate of 4 features, interval 10s, and a first stage of 24h so none finishes.
One process (testbed.synthetic) serves the series of every Deployment; the test bed's
Prometheus scrapes it every 5 s (the analysis windows are 1m).

Measured over `--window` seconds once every rollout carries traffic:
- tick lag: for each rollout, the time between two status writes that carry a new
  analysis check, minus the interval; the writes are timed as they arrive on a watch
  (so the figure includes the write itself). checkedAt has 1 s resolution, too coarse.
- the operator's RSS (now and peak, from /proc) and CPU seconds (utime + stime);
- API requests per second by verb and resource (kube-apiserver's
  apiserver_request_total, the window's increase), the operator's share estimated by
  subtracting the same window measured before it started;
- Prometheus queries per second (its prometheus_http_requests_total for /api/v1/query);
- status writes that changed nothing: PATCH and PUT requests on modelrollouts/status
  minus the stored versions the watch delivered, and writes whose only change is
  checkedAt/observed timestamps.
Before the operator starts, the time from creating the objects to each candidate's
first Ready replica (the test bed's pod start-up alone).

`--flagger N` runs Flagger with N Canaries instead (same interval, the same two metrics as
MetricTemplates; no drift gate, Flagger has none), held at their max weight by a
confirm-promotion webhook whose calls time Flagger's ticks.

    PYTHONPATH=tests python -m bench.scale --rollouts 1000 [--window 600] [--profile DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from bench.stack import (
    HTTPROUTES,
    ROLLOUTS,
    Obj,
    Operator,
    apply,
    held_rollout,
    namespace,
    start_testbed,
)
from integration import objects
from modelrollout.reference import Distribution, Reference, config_map
from testbed import ControlPlane, Prometheus, procs
from testbed.paths import ROOT
from testbed.peers import FLAGGER, install_crds, start_flagger
from testbed.serving import LoopbackServer

NAMESPACES = 20
INTERVAL = 10
WINDOW = "1m"
FEATURES = {f"f{i}": [-1.28, -0.84, -0.52, -0.25, 0.0, 0.25, 0.52, 0.84, 1.28] for i in range(4)}
SELECT = 'namespace="{{namespace}}",deployment="{{candidate.deployment}}"'
ERROR_RATE = (
    f'(sum(rate(model_requests_total{{{SELECT},code=~"5.."}}[{WINDOW}])) or vector(0))'
    f" / sum(rate(model_requests_total{{{SELECT}}}[{WINDOW}]))"
)
LATENCY_P99 = (
    "histogram_quantile(0.99, sum by (le) "
    f"(rate(model_request_duration_seconds_bucket{{{SELECT}}}[{WINDOW}])))"
)
SCRAPE_INTERVAL = "5s"


def reference() -> Reference:
    return Reference(
        samples=100_000,
        features=tuple(
            Distribution(
                name=n, edges=tuple(e), proportions=tuple([1 / (len(e) + 1)] * (len(e) + 1))
            )
            for n, e in FEATURES.items()
        ),
    )


def names(count: int) -> Iterator[tuple[str, str]]:
    """(namespace, rollout name) for `count` rollouts spread over the namespaces."""
    for i in range(count):
        yield f"scale-{i % NAMESPACES:02d}", f"m{i:04d}"


def deployment(name: str, replicas: int = 1) -> Obj:
    return objects.deployment_of(name, {"app": name}, replicas)


def service(name: str) -> Obj:
    return objects.service(name, selector={"app": name})


def targets(name: str) -> list[Obj]:
    stable, candidate = f"{name}-stable", f"{name}-candidate"
    route = objects.http_route(name, stable, candidate)
    return [deployment(stable), deployment(candidate), service(stable), service(candidate), route]


def rollout(name: str, prometheus_url: str) -> Obj:
    return held_rollout(
        name,
        f"{name}-stable",
        f"{name}-candidate",
        10,
        {
            "interval": f"{INTERVAL}s",
            "metrics": [
                {
                    "name": "error-rate",
                    "query": ERROR_RATE,
                    "slo": {"max": 0.02},
                    "abort": {"max": 0.1},
                },
                {"name": "latency-p99", "query": LATENCY_P99, "slo": {"max": 0.5}},
            ],
        },
        prometheus_url,
        driftGate={
            "histogram": "model_feature_value",
            "features": sorted(FEATURES),
            "reference": {"configMapRef": {"name": "training"}},
            "minSamples": 100,
        },
    )


# -- measuring ------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, float, float]:
    """(CPU seconds, RSS MB, peak RSS MB) of `pid` from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    return cpu, rss, peak


def scrape(url: str, context: Any = None) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30, context=context) as response:
        text: str = response.read().decode()
    return text


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def counters(text: str, name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """Sum a counter's samples by the given label keys."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out[tuple(labels.get(k, "") for k in keys)] += float(match.group(3))
    return out


def buckets(text: str, name: str) -> dict[float, float]:
    """A Prometheus histogram's cumulative counts by upper bound (`le`)."""
    found = counters(text, f"{name}_bucket", ("le",))
    return {float(le): v for (le,), v in found.items()}


def bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """`q`'s quantile of a histogram's observations, interpolated in its bucket as
    PromQL's histogram_quantile does; None when it is empty."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: that bound is all we know
            share = (rank - below) / max(cumulative[bound] - below, 1e-12)
            return lower + (bound - lower) * share
        lower, below = bound, cumulative[bound]
    return lower


def within(cumulative: dict[float, float], bound: float) -> float | None:
    """The share of observations at most `bound` (one of the histogram's bounds)."""
    total = cumulative.get(math.inf, 0.0)
    return cumulative.get(bound, 0.0) / total if total > 0 else None


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


@dataclass
class WriteWatch:
    """Watches the ModelRollouts of every namespace and times each stored version."""

    api: kubernetes.client.ApiClient
    group: str
    version: str
    plural: str
    arrivals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    versions: int = 0
    timestamp_only: int = 0
    _last: dict[str, Obj] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    recording: bool = False

    def start(self) -> WriteWatch:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(
                    custom.list_cluster_custom_object,
                    self.group,
                    self.version,
                    self.plural,
                    timeout_seconds=120,
                ):
                    if self._stop.is_set():
                        break
                    self._seen(event["type"], event["object"], time.time())
            except Exception as error:  # a broken stream starts again
                print(f"watch: {error}", file=sys.stderr)
            finally:
                watch.stop()

    def _seen(self, kind: str, obj: Obj, now: float) -> None:
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        status = obj.get("status") or {}
        before = self._last.get(key)
        self._last[key] = status
        if kind != "MODIFIED" or before is None or before == status or not self.recording:
            return
        self.versions += 1
        if _strip_times(before) == _strip_times(status):
            self.timestamp_only += 1
        checked = _checked(status)
        if checked and checked != _checked(before):
            self.arrivals[key].append(now)

    def stop(self) -> None:
        self._stop.set()


def _checked(status: Obj) -> tuple[str, ...]:
    return tuple(m.get("checkedAt", "") for m in status.get("analysis") or [])


def _strip_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_times(v)
            for k, v in value.items()
            if k not in ("checkedAt", "lastTransitionTime", "time", "etaSeconds", "ratePerSecond")
        }
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def lags(arrivals: dict[str, list[float]], interval: float) -> list[float]:
    return [
        later - earlier - interval
        for times in arrivals.values()
        for earlier, later in itertools.pairwise(times)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class TickGate(LoopbackServer):
    """Flagger's confirm-promotion webhook: "not yet", and the time of each call."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.recording = False
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                if gate.recording:
                    gate.arrivals[f"{body.get('namespace')}/{body.get('name')}"].append(time.time())
                self.send_response(403)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(Handler)


# -- the run --------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    rollouts: int
    window: float
    ready_seconds: list[float] = field(default_factory=list)  # creation -> first ready
    startup: dict[str, float] = field(default_factory=dict)  # median seconds per stage
    armed_seconds: float = 0.0  # controller start -> all carry traffic
    carrying: list[float] = field(default_factory=list)  # rollout created -> weight > 0
    lag: list[float] = field(default_factory=list)
    ticks_expected: int = 0
    cpu_seconds: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (verb, resource)/s
    baseline: dict[tuple[str, str], float] = field(default_factory=dict)
    queries_per_second: float = 0.0
    grouped_answers: float | None = None  # rollouts' queries answered by a shared one
    status_requests: float = 0.0
    # the operator's own histograms over the window, cumulative counts by bound
    tick_lag: dict[float, float] = field(default_factory=dict)
    pass_seconds: dict[float, float] = field(default_factory=dict)
    stored_versions: int = 0
    writes_answered: float = 0.0  # 2xx PATCH/PUT on ModelRollouts and their status
    writes_stored: float = 0.0  # etcd updates of ModelRollouts
    timestamp_only: int = 0
    census: dict[str, Any] | None = None  # bench/census.py, taken after the window
    notes: list[str] = field(default_factory=list)


def _prometheus_config(prometheus: Prometheus) -> None:
    config = yaml.safe_load((prometheus.workdir / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL)
    (prometheus.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))


def _series_file(workdir: Path, deployments: list[Obj]) -> Path:
    path = workdir / "series.json"
    path.write_text(json.dumps({"deployments": deployments, "features": FEATURES}))
    return path


def _apply_chunks(cp: ControlPlane, docs: list[tuple[str, Obj]], size: int = 400) -> None:
    by_ns: dict[str, list[Obj]] = defaultdict(list)
    for ns, doc in docs:
        by_ns[ns].append(doc)
    for ns, items in by_ns.items():
        for i in range(0, len(items), size):
            apply(cp, items[i : i + size], "-n", ns)


def _ready_times(
    api: kubernetes.client.ApiClient, wanted: set[tuple[str, str]], timeout: float
) -> list[float]:
    """Seconds from each wanted Deployment's creation (the API server's timestamp, 1 s
    resolution) until it is first seen with a ready replica (polled every second)."""
    apps = kubernetes.client.AppsV1Api(api)
    ready: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + timeout
    while len(ready) < len(wanted):
        now = time.time()
        for d in apps.list_deployment_for_all_namespaces().items:
            key = (d.metadata.namespace, d.metadata.name)
            if key in wanted and key not in ready and (d.status.ready_replicas or 0) >= 1:
                ready[key] = now - d.metadata.creation_timestamp.timestamp()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted) - len(ready)} Deployments not ready in {timeout}s")
        time.sleep(1)
    return sorted(ready.values())


def pod_startup(api: kubernetes.client.ApiClient, namespaces: set[str]) -> dict[str, float]:
    """Medians of where a pod's start-up went, from the API server's own timestamps
    (1 s resolution): Deployment created -> Pod created (kube-controller-manager's
    Deployment and ReplicaSet controllers), -> PodScheduled (kube-scheduler), -> Ready
    (kwok)."""
    apps, core = kubernetes.client.AppsV1Api(api), kubernetes.client.CoreV1Api(api)
    created = {
        (d.metadata.namespace, d.metadata.name): d.metadata.creation_timestamp
        for d in apps.list_deployment_for_all_namespaces().items
    }
    owners = {
        (r.metadata.namespace, r.metadata.name): r.metadata.owner_references[0].name
        for r in apps.list_replica_set_for_all_namespaces().items
        if r.metadata.owner_references
    }
    stages: dict[str, list[float]] = defaultdict(list)
    for pod in core.list_pod_for_all_namespaces().items:
        ns = pod.metadata.namespace
        if ns not in namespaces or not pod.metadata.owner_references:
            continue
        deployment = owners.get((ns, pod.metadata.owner_references[0].name))
        start = created.get((ns, deployment)) if deployment else None
        times = {c.type: c.last_transition_time for c in pod.status.conditions or ()}
        if start is None or "PodScheduled" not in times or "Ready" not in times:
            continue
        born = pod.metadata.creation_timestamp
        stages["pod created"].append((born - start).total_seconds())
        stages["scheduled"].append((times["PodScheduled"] - born).total_seconds())
        stages["ready"].append((times["Ready"] - times["PodScheduled"]).total_seconds())
    return {k: statistics.median(v) for k, v in stages.items()}


def _apiserver_requests(cp: ControlPlane) -> dict[tuple[str, str], float]:
    text = scrape(f"{cp.server}/metrics", cp._tls_context())
    return counters(text, "apiserver_request_total", ("verb", "resource", "subresource"))


def _queries(prometheus: Prometheus) -> float:
    text = scrape(f"{prometheus.url}/metrics")
    found = counters(text, "prometheus_http_requests_total", ("handler",))
    return found.get(("/api/v1/query",), 0.0)


def _rollout_writes(cp: ControlPlane) -> tuple[float, float]:
    """(successful PATCH/PUT requests on ModelRollouts and their status, the updates
    kube-apiserver made in etcd for them): a write that changed nothing is answered
    without an etcd update, so the difference counts them, whatever a watch missed."""
    text = scrape(f"{cp.server}/metrics", cp._tls_context())
    requests = counters(text, "apiserver_request_total", ("verb", "resource", "code"))
    answered = sum(
        v
        for (verb, resource, code), v in requests.items()
        if resource == "modelrollouts" and verb in ("PATCH", "PUT") and code.startswith("2")
    )
    updates = counters(text, "etcd_requests_total", ("operation", "resource"))
    return answered, updates.get(("update", "modelrollouts"), 0.0)


def _status_requests(requests: dict[tuple[str, str, str], float], plural: str) -> float:
    return sum(
        v
        for (verb, resource, sub), v in requests.items()
        if resource == plural and sub == "status" and verb in ("PATCH", "UPDATE", "PUT")
    )


def _by_verb(requests: dict[tuple[str, str, str], float], seconds: float) -> dict[Any, float]:
    out: dict[tuple[str, str], float] = defaultdict(float)
    for (verb, resource, sub), v in requests.items():
        if verb == "WATCH":
            continue
        out[(verb, resource + (f"/{sub}" if sub else ""))] += v / seconds
    return dict(out)


def run_ours(
    count: int,
    window: float,
    log: Callable[[str], None],
    profile: Path | None,
    operator_env: dict[str, str] | None = None,
    census: bool = False,
) -> Result:
    result = Result("ModelRollout", count, window)
    pods = count * 2
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        cp, prometheus = _testbed(stack, pods)
        api = stack.enter_context(cp.api_client())
        spaces = sorted({ns for ns, _ in names(count)})
        for ns in spaces:
            namespace(cp, ns)
            apply(cp, [config_map("training", reference())], "-n", ns)
        deployments = [
            {"namespace": ns, "deployment": f"{n}-{side}", "features": side == "candidate"}
            for ns, n in names(count)
            for side in ("stable", "candidate")
        ]
        _exporter(stack, workdir, deployments, prometheus)
        log(f"creating {count} rollouts' Deployments, Services and HTTPRoutes")
        _apply_chunks(cp, [(ns, doc) for ns, n in names(count) for doc in targets(n)])
        wanted = {(ns, f"{n}-candidate") for ns, n in names(count)}
        result.ready_seconds = _ready_times(api, wanted, 60 + count * 0.5)
        result.startup = pod_startup(api, set(spaces))
        log(
            "first ready replica of every candidate: "
            f"median {statistics.median(result.ready_seconds):.0f}s, "
            f"max {result.ready_seconds[-1]:.0f}s after creation (test bed only)"
        )
        baseline_window = min(60.0, window)
        before = _apiserver_requests(cp)
        time.sleep(baseline_window)
        result.baseline = _by_verb(delta(_apiserver_requests(cp), before), baseline_window)
        watch = WriteWatch(api, *ROLLOUTS).start()
        stack.callback(watch.stop)
        census_file = workdir / "census.json"
        op = Operator(cp, spaces, workdir).start(
            env={**(operator_env or {}), "MODELROLLOUT_CENSUS": str(census_file)},
            module="bench.census" if census else "modelrollout",
        )
        assert op.proc is not None
        stack.callback(op.proc.stop)
        started = time.monotonic()
        _apply_chunks(cp, [(ns, rollout(n, prometheus.url)) for ns, n in names(count)])
        result.carrying = _wait_carrying(
            api, count, 120 + count * 1.5, log, lambda: _created(api, *ROLLOUTS)
        )
        result.armed_seconds = time.monotonic() - started
        log(
            f"all {count} rollouts carry traffic "
            f"{result.armed_seconds:.0f}s after the operator started"
        )
        result = _measure(
            result, cp, prometheus, op.proc.pid, watch, window, log, profile, op.metrics
        )
        result.stored_versions = watch.versions
        result.timestamp_only = watch.timestamp_only
        result.lag = lags(watch.arrivals, INTERVAL)
        result.ticks_expected = int(count * (window / INTERVAL - 1))
        if census:
            log("taking the operator's object census (it holds the GIL meanwhile)")
            os.kill(op.proc.pid, signal.SIGUSR2)
            procs.wait_until(census_file.exists, 1800, "the census", op.proc)
            result.census = json.loads(census_file.read_text())
        if op.proc.popen is not None and op.proc.popen.poll() is not None:
            result.notes.append(f"the operator exited: {op.proc.tail(20)}")
    return result


def _measure(
    result: Result,
    cp: ControlPlane,
    prometheus: Prometheus,
    pid: int,
    watch: WriteWatch | None,
    window: float,
    log: Callable[[str], None],
    profile: Path | None,
    own_metrics: Callable[[], str] | None = None,
) -> Result:
    requests_before, queries_before = _apiserver_requests(cp), _queries(prometheus)
    writes_before = _rollout_writes(cp)
    own_before = own_metrics() if own_metrics else ""
    cpu_before, _, _ = proc_stats(pid)
    if watch is not None:
        watch.recording = True
    spy = _py_spy(pid, window, profile) if profile else None
    log(f"measuring for {window:.0f}s")
    rss_max = 0.0
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        _, rss, _ = proc_stats(pid)
        rss_max = max(rss_max, rss)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    cpu_after, rss, peak = proc_stats(pid)
    requests = delta(_apiserver_requests(cp), requests_before)
    writes_after = _rollout_writes(cp)
    result.writes_answered = writes_after[0] - writes_before[0]
    result.writes_stored = writes_after[1] - writes_before[1]
    if watch is not None:
        time.sleep(2)  # the watch events of writes counted above arrive
        watch.recording = False
    result.queries_per_second = (_queries(prometheus) - queries_before) / window
    result.cpu_seconds = cpu_after - cpu_before
    result.rss_mb, result.peak_rss_mb = max(rss, rss_max), peak
    result.requests = _by_verb(requests, window)
    result.status_requests = _status_requests(requests, "modelrollouts")
    if own_metrics is not None:
        own_after = own_metrics()
        for name, into in (
            ("modelrollout_tick_lag_seconds", result.tick_lag),
            ("modelrollout_reconcile_duration_seconds", result.pass_seconds),
        ):
            before = buckets(own_before, name)
            into.update({k: v - before.get(k, 0.0) for k, v in buckets(own_after, name).items()})
        grouped = "modelrollout_prometheus_grouped_answers_total"
        result.grouped_answers = sum(counters(own_after, grouped, ()).values()) - sum(
            counters(own_before, grouped, ()).values()
        )
    if spy is not None:  # it has written the profile by the end of its duration
        try:
            spy.wait(timeout=120)
        except subprocess.TimeoutExpired:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                result.notes.append("py-spy did not finish; its profile may be incomplete")
    return result


def _py_spy(pid: int, seconds: float, folder: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
         "--format", "raw", "--output", str(folder / "profile.txt"), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=open(folder / "py-spy.log", "wb"),
    )  # fmt: skip


def _testbed(stack: ExitStack, pods: int) -> tuple[ControlPlane, Prometheus]:
    nodes = max(3, math.ceil(pods / 400) + 1)  # 500 pods fit a fake node
    cp, prometheus = start_testbed(stack, nodes=nodes, configure_prometheus=_prometheus_config)
    return cp, prometheus


def _exporter(
    stack: ExitStack, workdir: Path, deployments: list[Obj], prometheus: Prometheus
) -> None:
    port = procs.free_port()
    proc = procs.spawn(
        "synthetic",
        [sys.executable, "-m", "testbed.synthetic", f"--port={port}",
         f"--series={_series_file(workdir, deployments)}", "--lifetime=7200"],
        env={"PYTHONPATH": str(ROOT / "tests")},
    )  # fmt: skip
    stack.callback(proc.stop)
    prometheus.set_targets([{"targets": [f"127.0.0.1:{port}"]}])


def _wait_carrying(
    api: kubernetes.client.ApiClient,
    count: int,
    timeout: float,
    log: Callable[[str], None],
    created: Callable[[], dict[tuple[str, str], float]],
) -> list[float]:
    """Until every HTTPRoute sends weight to its candidate; for each, the seconds from
    its rollout's creation (`created`: {(namespace, name): time}) until first seen so
    (polled every second)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    first: dict[tuple[str, str], float] = {}
    last_log = 0.0
    while True:
        now = time.time()
        for r in custom.list_cluster_custom_object(*HTTPROUTES)["items"]:
            key = (r["metadata"]["namespace"], r["metadata"]["name"])
            refs = [ref for rule in r["spec"].get("rules", []) for ref in rule["backendRefs"]]
            if key not in first and any(
                ref["name"].endswith(("-candidate", "-canary")) and ref.get("weight", 0) > 0
                for ref in refs
            ):
                first[key] = now
        if len(first) >= count:
            born = created()
            return sorted(t - born[k] for k, t in first.items() if k in born)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(first)} of {count} carry traffic after {timeout:.0f}s")
        if time.monotonic() - last_log > 10:
            log(f"{len(first)} of {count} carry traffic")
            last_log = time.monotonic()
        time.sleep(1)


def _created(api: kubernetes.client.ApiClient, *resource: str) -> dict[tuple[str, str], float]:
    custom = kubernetes.client.CustomObjectsApi(api)
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): datetime.fromisoformat(
            o["metadata"]["creationTimestamp"].replace("Z", "+00:00")
        ).timestamp()
        for o in custom.list_cluster_custom_object(*resource)["items"]
    }


def run_flagger(count: int, window: float, log: Callable[[str], None]) -> Result:
    result = Result("Flagger", count, window)
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        cp, prometheus = _testbed(stack, count * 2)
        api = stack.enter_context(cp.api_client())
        install_crds(cp, FLAGGER)
        ns = "scale-flagger"
        namespace(cp, ns)
        gate = TickGate()
        stack.callback(gate.close)
        fl_names = [f"f{i:04d}" for i in range(count)]
        _exporter(
            stack, workdir, [{"namespace": ns, "deployment": n} for n in fl_names], prometheus
        )
        templates = [
            _flagger_template("error-rate", ERROR_RATE, prometheus.url),
            _flagger_template("latency-p99", LATENCY_P99, prometheus.url),
        ]
        apply(cp, templates, "-n", ns)
        proc = start_flagger(cp, ns, prometheus.url, workdir)
        stack.callback(proc.stop)
        created = time.time()
        _apply_chunks(
            cp, [(ns, d) for n in fl_names for d in (deployment(n), _canary(n, ns, gate.url))]
        )
        _wait_phase(api, ns, count, "Initialized", 300 + count * 1.0, log)
        result.ready_seconds = [time.time() - created]
        revision = {"spec": {"template": {"metadata": {"annotations": {"bench/revision": "2"}}}}}
        started = time.monotonic()
        for n in fl_names:
            cp.kubectl(
                "patch", "deployment", n, "-n", ns, "--type=merge", "-p", json.dumps(revision)
            )
        result.carrying = _wait_carrying(
            api,
            count,
            300 + count * 1.0,
            log,
            lambda: _created(api, "flagger.app", "v1beta1", "canaries"),
        )
        result.armed_seconds = time.monotonic() - started
        gate.recording = True
        result = _measure(result, cp, prometheus, proc.pid, None, window, log, None)
        gate.recording = False
        result.lag = lags(gate.arrivals, INTERVAL)
        result.ticks_expected = int(count * (window / INTERVAL - 1))
        result.status_requests = _status_requests(
            {(v, r, s): x * window for (v, rs), x in result.requests.items()
             for r, _, s in [rs.partition("/")]}, "canaries"
        )  # fmt: skip
    return result


def _flagger_template(name: str, query: str, url: str) -> Obj:
    flagger_query = query.replace("{{namespace}}", "{{ namespace }}").replace(
        "{{candidate.deployment}}", "{{ target }}"
    )
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": name},
        "spec": {"provider": {"type": "prometheus", "address": url}, "query": flagger_query},
    }


def _canary(name: str, ns: str, gate_url: str) -> Obj:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {
                "port": 80,
                "targetPort": 8080,
                "gatewayRefs": [{"name": "gateway", "namespace": ns}],
            },
            "analysis": {
                "interval": f"{INTERVAL}s",
                "threshold": 5,
                "stepWeight": 10,
                "maxWeight": 10,
                "metrics": [
                    {
                        "name": "error-rate",
                        "templateRef": {"name": "error-rate"},
                        "thresholdRange": {"max": 0.02},
                        "interval": WINDOW,
                    },
                    {
                        "name": "latency-p99",
                        "templateRef": {"name": "latency-p99"},
                        "thresholdRange": {"max": 0.5},
                        "interval": WINDOW,
                    },
                ],
                "webhooks": [{"name": "hold", "type": "confirm-promotion", "url": gate_url}],
            },
        },
    }


def _wait_phase(
    api: kubernetes.client.ApiClient,
    ns: str,
    count: int,
    phase: str,
    timeout: float,
    log: Callable[[str], None],
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        items = custom.list_namespaced_custom_object("flagger.app", "v1beta1", ns, "canaries")[
            "items"
        ]
        done = sum(1 for c in items if (c.get("status") or {}).get("phase") == phase)
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} Canaries {phase} after {timeout:.0f}s")
        log(f"{done} of {count} Canaries {phase}")
        time.sleep(5)


# -- the report -----------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    return percentile(values, q) if values else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(results: list[Result]) -> str:
    lines = []
    head = f"{'':<34}" + "".join(f"{r.label + ' ' + str(r.rollouts):>18}" for r in results)
    lines.append(head)

    def row(name: str, cell: Callable[[Result], str]) -> None:
        lines.append(f"{name:<34}" + "".join(f"{cell(r):>18}" for r in results))

    def lag(q: float | None) -> Callable[[Result], str]:
        def cell(r: Result) -> str:
            if not r.lag:
                return "-"
            value = max(r.lag) if q is None else percentile(r.lag, q)
            return f"{value:.2f}"

        return cell

    row("window s", lambda r: f"{r.window:.0f}")
    row("ticks seen / due", lambda r: f"{len(r.lag)}/{r.ticks_expected}")
    row("write-to-write - interval p50 s", lag(0.5))
    row("write-to-write - interval p99 s", lag(0.99))
    row("write-to-write - interval max s", lag(None))

    def histogram(
        values: Callable[[Result], dict[float, float]], q: float
    ) -> Callable[[Result], str]:
        def cell(r: Result) -> str:
            value = bucket_quantile(values(r), q)
            return "-" if value is None else f"{value:.2f}"

        return cell

    row(
        "passes started (operator)",
        lambda r: f"{r.tick_lag.get(math.inf, 0):.0f}" if r.tick_lag else "-",
    )
    row("  started late p50 s", histogram(lambda r: r.tick_lag, 0.5))
    row("  started late p99 s", histogram(lambda r: r.tick_lag, 0.99))
    row(
        "  started <= 1 s late",
        lambda r: "-" if within(r.tick_lag, 1.0) is None else f"{within(r.tick_lag, 1.0):.1%}",
    )
    row("  pass took p50 s", histogram(lambda r: r.pass_seconds, 0.5))
    row("  pass took p99 s", histogram(lambda r: r.pass_seconds, 0.99))
    row("RSS MB (peak)", lambda r: f"{r.rss_mb:.0f} ({r.peak_rss_mb:.0f})")
    row(
        "CPU s in window (cores)", lambda r: f"{r.cpu_seconds:.0f} ({r.cpu_seconds / r.window:.2f})"
    )
    row("Prometheus queries/s", lambda r: f"{r.queries_per_second:.1f}")
    row("queries per rollout-tick", lambda r: f"{r.queries_per_second * INTERVAL / r.rollouts:.2f}")
    row(
        "  answered by a shared query/s",
        lambda r: "-" if r.grouped_answers is None else f"{r.grouped_answers / r.window:.1f}",
    )
    row("status writes/s", lambda r: f"{r.status_requests / r.window:.1f}")
    row(
        "  changed nothing (watch)",
        lambda r: (
            f"{max(0.0, r.status_requests - r.stored_versions):.0f}"
            if r.label == "ModelRollout"
            else "n/a"
        ),
    )
    row(
        "  changed nothing (etcd)",
        lambda r: (
            f"{r.writes_answered - r.writes_stored:.0f} of {r.writes_answered:.0f}"
            if r.label == "ModelRollout"
            else "n/a"
        ),
    )
    row(
        "  only timestamps changed",
        lambda r: f"{r.timestamp_only}" if r.label == "ModelRollout" else "n/a",
    )
    row(
        "candidate ready s (median)",
        lambda r: f"{statistics.median(r.ready_seconds):.0f}" if r.ready_seconds else "-",
    )
    for stage in ("pod created", "scheduled", "ready"):
        row(f"  of which {stage} s (median)", lambda r, k=stage: _cell(r.startup.get(k)))
    row("all carrying traffic after s", lambda r: f"{r.armed_seconds:.0f}")
    row("  rollout created -> weight > 0 p50", lambda r: _cell(_pct(r.carrying, 0.5)))
    row("  rollout created -> weight > 0 max", lambda r: _cell(_pct(r.carrying, 1.0)))
    verbs: set[tuple[str, str]] = set()
    for r in results:
        verbs |= {k for k, v in r.requests.items() if v - r.baseline.get(k, 0.0) >= 0.05}
    for verb, resource in sorted(verbs, key=lambda k: (k[1], k[0])):
        row(
            f"API {verb} {resource}/s",
            lambda r, k=(verb, resource): f"{r.requests.get(k, 0.0) - r.baseline.get(k, 0.0):.2f}",
        )
    for r in results:
        for note in r.notes:
            lines.append(f"note ({r.label} {r.rollouts}): {note}")
    return "\n".join(lines)


def census_table(census: dict[str, Any], top: int = 15) -> str:
    lines = []
    for view in ("by_owner", "by_type"):
        lines.append(f"{view.replace('_', ' ')}:{'count':>62} {'MB':>9}")
        for name, count, size in census[view][:top]:
            lines.append(f"  {name[-60:]:<60} {count:>9} {size / 2**20:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", default="1000", help="comma-separated counts, one run each")
    parser.add_argument("--flagger", type=int, default=0, help="also Flagger with this many")
    parser.add_argument("--window", type=float, default=600)
    parser.add_argument("--profile", type=Path, help="py-spy the operator into this folder")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--census", action="store_true",
        help="after the window, census the operator's live objects (bench/census.py)",
    )  # fmt: skip
    parser.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE",
        help="an environment variable for the operator, e.g. MALLOC_ARENA_MAX=2",
    )  # fmt: skip
    args = parser.parse_args(argv)
    operator_env = dict(item.split("=", 1) for item in args.operator_env)
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    results = []
    for count in (int(c) for c in args.rollouts.split(",") if c):
        folder = args.profile / str(count) if args.profile else None
        try:
            results.append(
                run_ours(count, args.window, log, folder, operator_env, census=args.census)
            )
        except (TimeoutError, RuntimeError) as error:  # the next size may still tell
            log(f"{count} rollouts: {error}")
            results.append(Result("ModelRollout", count, args.window, notes=[str(error)]))
            continue
        print(report(results[-1:]), file=sys.stderr, flush=True)
        if results[-1].census:
            print(census_table(results[-1].census), file=sys.stderr, flush=True)
    if args.flagger:
        results.append(run_flagger(args.flagger, args.window, log))
    print(report(results))
    if args.json:
        rows = [
            {**{k: v for k, v in vars(r).items() if k not in ("requests", "baseline")},
             "requests": {f"{v} {res}": x for (v, res), x in r.requests.items()},
             "baseline": {f"{v} {res}": x for (v, res), x in r.baseline.items()}}
            for r in results
        ]  # fmt: skip
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r.lag and not r.notes for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
