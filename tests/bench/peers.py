"""`make bench-peers`: breach to rollback, ModelRollout beside Flagger and Argo Rollouts.

All three run at once on one test bed, each watching its own namespace. One exporter
process serves the same request series for every candidate (each candidate is a scrape
target of that one process, labelled with its namespace and deployment). Once every
candidate carries traffic, the exporter's error rate goes from 0 to 0.5, past the abort
threshold of 0.05 every tool is given.

Per trial: from the first moment Prometheus answers the candidate's error-rate query
above 0.05 (polled every 0.2 s) to the first moment the API server holds the
candidate's weight at 0 (polled every 0.2 s): the HTTPRoute weight for ModelRollout and
Flagger, the canary ReplicaSet's replicas for Argo Rollouts' replica-count canary.

Two settings per tool. `defaults`: ours at interval 30s; Flagger interval 1m, threshold
5 (its Gateway API tutorial); Argo Rollouts interval 5m, failureLimit 3 (its background
analysis example). `fastest`: ours at 5s (our minimum); Flagger 10s (its minimum) and
threshold 1; Argo Rollouts 1s (it has no minimum; Prometheus scrapes every 1s, so
polling faster sees nothing new) and failureLimit 0. Every tool runs the same query
text; its window is 30s in `defaults` and 5s in `fastest` for all.

Trials run side by side: trial i of a tool starts its analysis clock at i/N of that
tool's interval, so the breach meets each trial at a different phase of its ticks.

    PYTHONPATH=tests python -m bench.peers [--trials N] [--settings defaults,fastest]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import kubernetes

from bench.stack import (
    HTTPROUTES,
    Exporter,
    Obj,
    Operator,
    apply,
    held_rollout,
    namespace,
    start_testbed,
)
from integration import objects
from testbed import ControlPlane, Prometheus
from testbed.peers import (
    ARGO_ROLLOUTS,
    FLAGGER,
    PeerBuildError,
    binary,
    install_crds,
    start_argo_rollouts,
    start_flagger,
)
from testbed.serving import LoopbackServer

THRESHOLD = 0.05
BREACH_ERROR_RATE = 0.5
NS = {"modelrollout": "bench-mro", "flagger": "bench-flagger", "argo-rollouts": "bench-argo"}
TOOLS = tuple(NS)


@dataclass(frozen=True)
class Setting:
    name: str
    window: str
    mro_interval: int
    flagger: Obj  # analysis fields
    argo: Obj  # metric fields

    def interval(self, tool: str) -> float:
        if tool == "modelrollout":
            return self.mro_interval
        if tool == "flagger":
            return _seconds(self.flagger["interval"])
        return _seconds(self.argo["interval"])


SETTINGS = {
    "defaults": Setting(
        "defaults",
        "30s",
        30,
        {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50},
        {"interval": "5m", "failureLimit": 3},
    ),
    "fastest": Setting(
        "fastest",
        "5s",
        5,
        {"interval": "10s", "threshold": 1, "stepWeight": 50, "maxWeight": 50},
        {"interval": "1s", "failureLimit": 0},
    ),
}


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]]


def error_rate(namespace: str, deployment: str, window: str) -> str:
    """The query every tool runs (ours, as in the README, with the namespace)."""
    select = f'namespace="{namespace}",deployment="{deployment}"'
    return (
        f'(sum(rate(model_requests_total{{{select},code=~"5.."}}[{window}])) or vector(0))'
        f" / sum(rate(model_requests_total{{{select}}}[{window}]))"
    )


@dataclass
class Trial:
    tool: str
    setting: Setting
    index: int
    name: str
    deployment: str  # the candidate's `deployment` label in the exporter's series
    start_at: float = 0.0  # when its analysis clock starts (monotonic)
    state: str = "new"
    weight: float | None = None  # last routed weight seen
    armed_at: float | None = None
    visible_at: float | None = None  # breach first visible in Prometheus (wall clock)
    zero_at: float | None = None  # weight first seen at 0 after the breach (wall clock)
    note: str = ""

    @property
    def namespace(self) -> str:
        return NS[self.tool]

    @property
    def seconds(self) -> float | None:
        if self.visible_at is None or self.zero_at is None:
            return None
        return self.zero_at - self.visible_at


# -- the objects of each tool ---------------------------------------------------------


def deployment(name: str, replicas: int = 1, **template_annotations: str) -> Obj:
    return objects.deployment_of(name, {"app": name}, replicas, annotations=template_annotations)


def service(name: str) -> Obj:
    return objects.service(name, selector={"app": name})


def mro_objects(trial: Trial, prometheus_url: str) -> list[Obj]:
    stable, candidate = f"{trial.name}-stable", trial.deployment
    route = objects.http_route(trial.name, stable, candidate)
    error_rate_abort = {
        "name": "error-rate",
        "query": error_rate(trial.namespace, candidate, trial.setting.window),
        "abort": {"max": THRESHOLD},
    }
    analysis = {"interval": f"{trial.setting.mro_interval}s", "metrics": [error_rate_abort]}
    rollout = held_rollout(trial.name, stable, candidate, 50, analysis, prometheus_url)
    return [
        deployment(stable),
        deployment(candidate),
        service(stable),
        service(candidate),
        route,
        rollout,
    ]


def flagger_template(setting: Setting, prometheus_url: str) -> Obj:
    query = error_rate("{{ namespace }}", "{{ target }}", setting.window)
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": f"error-rate-{setting.name}"},
        "spec": {"provider": {"type": "prometheus", "address": prometheus_url}, "query": query},
    }


def flagger_canary(trial: Trial, gate_url: str) -> Obj:
    setting = trial.setting
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": trial.name},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": trial.name},
            "service": {
                "port": 80,
                "targetPort": 8080,
                "gatewayRefs": [{"name": "gateway", "namespace": trial.namespace}],
            },
            "analysis": {
                **setting.flagger,
                "metrics": [
                    {
                        "name": "error-rate",
                        "templateRef": {"name": f"error-rate-{setting.name}"},
                        "thresholdRange": {"max": THRESHOLD},
                        "interval": setting.flagger["interval"],
                    }
                ],
                # Holds the canary at maxWeight while its checks go on (a 403 from our
                # gate), so no trial is promoted before the breach.
                "webhooks": [{"name": "hold", "type": "confirm-promotion", "url": gate_url}],
            },
        },
    }


def argo_template(setting: Setting, prometheus_url: str) -> Obj:
    query = error_rate(NS["argo-rollouts"], "{{args.deployment}}", setting.window)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": f"error-rate-{setting.name}"},
        "spec": {
            "args": [{"name": "deployment"}],
            "metrics": [
                {
                    "name": "error-rate",
                    **setting.argo,
                    "successCondition": f"result[0] <= {THRESHOLD}",
                    "provider": {"prometheus": {"address": prometheus_url, "query": query}},
                }
            ],
        },
    }


def argo_rollout(trial: Trial, revision: str) -> Obj:
    labels = {"app": trial.name}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": trial.name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"bench/revision": revision}},
                "spec": {"containers": [{"name": "server", "image": "model-server:dev"}]},
            },
            "strategy": {
                "canary": {
                    "analysis": {
                        "templates": [{"templateName": f"error-rate-{trial.setting.name}"}],
                        "args": [{"name": "deployment", "value": trial.deployment}],
                    },
                    "steps": [{"setWeight": 50}, {"pause": {}}],
                }
            },
        },
    }


class PromotionGate(LoopbackServer):
    """Flagger's confirm-promotion webhook: always "not yet" (HTTP 403)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(403)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(Handler)


# -- reading weights ------------------------------------------------------------------


def route_weights(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, dict[str, int]]:
    """{route name: {backend service: weight}} for every HTTPRoute in `namespace`."""
    custom = kubernetes.client.CustomObjectsApi(api)
    routes = custom.list_namespaced_custom_object(*HTTPROUTES[:2], namespace, HTTPROUTES[2])
    out: dict[str, dict[str, int]] = {}
    for route in routes["items"]:
        refs = [r for rule in route["spec"].get("rules", []) for r in rule.get("backendRefs", [])]
        out[route["metadata"]["name"]] = {r["name"]: int(r.get("weight", 1)) for r in refs}
    return out


def argo_canary_replicas(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, int]:
    """{rollout: spec.replicas of its canary ReplicaSet} while it has one being rolled out."""
    custom = kubernetes.client.CustomObjectsApi(api)
    rollouts = custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "rollouts"
    )
    apps = kubernetes.client.AppsV1Api(api)
    sets = apps.list_namespaced_replica_set(namespace).items
    out: dict[str, int] = {}
    for rollout in rollouts["items"]:
        status = rollout.get("status") or {}
        current, stable = status.get("currentPodHash"), status.get("stableRS")
        if not current or current == stable:
            continue
        for rs in sets:
            if (rs.metadata.labels or {}).get("rollouts-pod-template-hash") == current:
                out[rollout["metadata"]["name"]] = int(rs.spec.replicas or 0)
    return out


def argo_analysis_running(api: kubernetes.client.ApiClient, namespace: str) -> set[str]:
    """Rollouts whose background AnalysisRun is Running."""
    custom = kubernetes.client.CustomObjectsApi(api)
    runs = custom.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "analysisruns"
    )
    out = set()
    for run in runs["items"]:
        owners = run["metadata"].get("ownerReferences") or []
        if (run.get("status") or {}).get("phase") == "Running" and owners:
            out.add(owners[0]["name"])
    return out


def flagger_phase(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, str]:
    custom = kubernetes.client.CustomObjectsApi(api)
    canaries = custom.list_namespaced_custom_object("flagger.app", "v1beta1", namespace, "canaries")
    return {
        c["metadata"]["name"]: (c.get("status") or {}).get("phase", "") for c in canaries["items"]
    }


# -- the run --------------------------------------------------------------------------


@dataclass
class Bench:
    cp: ControlPlane
    prometheus: Prometheus
    api: kubernetes.client.ApiClient
    exporter: Exporter
    trials: list[Trial]
    tools: tuple[str, ...]
    gate: PromotionGate
    log: Callable[[str], None]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def targets(self) -> None:
        """One scrape target per candidate, all the same exporter process."""
        self.prometheus.set_targets(
            [
                {
                    "targets": [self.exporter.address],
                    "labels": {"namespace": t.namespace, "deployment": t.deployment},
                }
                for t in self.trials
            ]
        )

    def step(self, now: float) -> None:
        """Advance every trial's set-up by what the API server shows."""
        weights = self.observe()
        for trial in self.trials:
            trial.weight = weights.get((trial.tool, trial.name))
            if trial.state == "new" and now >= trial.start_at:
                self.begin(trial)
            elif trial.state == "initialised" and trial.tool == "flagger":
                self.trigger(trial)
            initialised = self._flagger_phase.get(trial.name) == "Initialized"
            if trial.state == "started" and trial.tool == "flagger" and initialised:
                trial.state = "initialised"
            analysing = trial.tool != "argo-rollouts" or trial.name in self._argo_running
            if trial.state in ("started", "triggered") and (trial.weight or 0) > 0 and analysing:
                trial.state, trial.armed_at = "armed", time.time()
                self.log(f"{trial.tool} {trial.setting.name} #{trial.index} armed")

    def begin(self, trial: Trial) -> None:
        ns = trial.namespace
        if trial.tool == "modelrollout":
            url = self.prometheus.url
            apply(self.cp, mro_objects(trial, url), "-n", ns)
            trial.state = "started"
        elif trial.tool == "flagger":
            apply(self.cp, [deployment(trial.name), flagger_canary(trial, self.gate.url)], "-n", ns)
            trial.state = "started"
        else:  # the Rollout exists at revision 1 already; revision 2 starts the canary
            apply(self.cp, [argo_rollout(trial, "2")], "-n", ns)
            trial.state = "triggered"

    def trigger(self, trial: Trial) -> None:
        """Flagger analyses a new revision of its target once it has initialised."""
        revision = {"spec": {"template": {"metadata": {"annotations": {"bench/revision": "2"}}}}}
        self.cp.kubectl(
            "patch", "deployment", trial.name, "-n", trial.namespace, "--type=merge",
            "-p", json.dumps(revision),
        )  # fmt: skip
        trial.state = "triggered"

    _flagger_phase: dict[str, str] = field(default_factory=dict)
    _argo_running: set[str] = field(default_factory=set)

    def observe(self) -> dict[tuple[str, str], float]:
        weights: dict[tuple[str, str], float] = {}
        if "modelrollout" in self.tools:
            for name, refs in route_weights(self.api, NS["modelrollout"]).items():
                weights[("modelrollout", name)] = refs.get(f"{name}-candidate", 0)
        if "flagger" in self.tools:
            for name, refs in route_weights(self.api, NS["flagger"]).items():
                weights[("flagger", name)] = refs.get(f"{name}-canary", 0)
            self._flagger_phase = flagger_phase(self.api, NS["flagger"])
        if "argo-rollouts" in self.tools:
            for name, replicas in argo_canary_replicas(self.api, NS["argo-rollouts"]).items():
                weights[("argo-rollouts", name)] = replicas
            self._argo_running = argo_analysis_running(self.api, NS["argo-rollouts"])
        return weights


def visible(prometheus: Prometheus, trials: list[Trial]) -> None:
    """Stamp each trial with the first moment its query answers above the threshold."""
    by_window: dict[str, list[Trial]] = {}
    for t in trials:
        if t.visible_at is None:
            by_window.setdefault(t.setting.window, []).append(t)
    for window, group in by_window.items():
        query = (
            f'sum by (namespace, deployment) (rate(model_requests_total{{code=~"5.."}}[{window}]))'
            f" / sum by (namespace, deployment) (rate(model_requests_total[{window}]))"
        )
        now = time.time()
        result = prometheus.query(query)["result"]
        above = {
            (r["metric"].get("namespace"), r["metric"].get("deployment"))
            for r in result
            if float(r["value"][1]) > THRESHOLD
        }
        for t in group:
            if (t.namespace, t.deployment) in above:
                t.visible_at = now


def run(
    trials_per: int,
    settings: list[Setting],
    tools: tuple[str, ...],
    log: Callable[[str], None],
    arm_timeout: float,
    rollback_timeout: float,
) -> list[Trial]:
    trials = [
        Trial(tool, s, i, name, name if tool == "flagger" else f"{name}-candidate")
        for s in settings
        for tool in tools
        for i in range(trials_per)
        for name in [f"{tool[:2]}-{s.name[:4]}-{i}"]
    ]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        cp, prometheus = start_testbed(stack)
        api = stack.enter_context(cp.api_client())
        if "flagger" in tools:
            install_crds(cp, FLAGGER)
        if "argo-rollouts" in tools:
            install_crds(cp, ARGO_ROLLOUTS)
        for tool in tools:
            namespace(cp, NS[tool])
        gate = PromotionGate()
        stack.callback(gate.close)
        lifetime = arm_timeout + rollback_timeout + 600
        exporter = Exporter().start(lifetime, rps=50.0, error_rate=0.0)
        stack.callback(lambda: exporter.proc and exporter.proc.stop())
        bench = Bench(cp, prometheus, api, exporter, trials, tools, gate, log)
        bench.targets()
        url = prometheus.url
        if "modelrollout" in tools:
            op = Operator(cp, [NS["modelrollout"]], workdir).start()
            stack.callback(lambda: op.proc and op.proc.stop())
        if "flagger" in tools:
            apply(cp, [flagger_template(s, url) for s in settings], "-n", NS["flagger"])
            proc = start_flagger(cp, NS["flagger"], url, workdir)
            stack.callback(proc.stop)
        if "argo-rollouts" in tools:
            ns = NS["argo-rollouts"]
            apply(cp, [argo_template(s, url) for s in settings], "-n", ns)
            proc = start_argo_rollouts(cp, ns, workdir)
            stack.callback(proc.stop)
            argo = [t for t in trials if t.tool == "argo-rollouts"]
            apply(cp, [argo_rollout(t, "1") for t in argo], "-n", ns)
            _wait_argo_healthy(api, ns, [t.name for t in argo], arm_timeout)
        begin = time.monotonic() + 1
        for t in trials:  # stratified phases: trial i starts at i/N of its interval
            t.start_at = begin + t.index * t.setting.interval(t.tool) / trials_per
        deadline = time.monotonic() + arm_timeout
        while any(t.state != "armed" for t in trials):
            if time.monotonic() > deadline:
                waiting = [f"{t.tool}/{t.name}: {t.state}" for t in trials if t.state != "armed"]
                raise TimeoutError(f"not armed after {arm_timeout:.0f}s: {waiting}")
            bench.step(time.monotonic())
            time.sleep(0.5)
        log(f"all {len(trials)} trials carry traffic; breach: error rate -> {BREACH_ERROR_RATE}")
        watchers = [WeightWatch(api, t) for t in trials]
        stop = threading.Event()
        poller = threading.Thread(target=_poll_visible, args=(prometheus, trials, stop))
        poller.start()
        stack.callback(stop.set)
        exporter.configure(error_rate=BREACH_ERROR_RATE)
        deadline = time.monotonic() + rollback_timeout
        reported: set[int] = set()
        while len(reported) < len(trials) and time.monotonic() < deadline:
            for i, (t, w) in enumerate(zip(trials, watchers, strict=True)):
                if w.zero_at is not None and i not in reported:
                    reported.add(i)
                    t.zero_at = w.zero_at
                    log(f"{t.tool} {t.setting.name} #{t.index} at 0: {t.seconds}")
            time.sleep(0.5)
        stop.set()
        poller.join()
        for t, w in zip(trials, watchers, strict=True):
            w.stop()
            if t.zero_at is None:
                t.note = f"weight still {w.weight} {rollback_timeout:.0f}s after the breach"
            elif t.visible_at is None or t.zero_at < t.visible_at:
                t.note = "weight 0 before the breach showed in Prometheus"
    return trials


def _poll_visible(prometheus: Prometheus, trials: list[Trial], stop: threading.Event) -> None:
    while not stop.is_set() and any(t.visible_at is None for t in trials):
        visible(prometheus, trials)
        time.sleep(0.1)


class WeightWatch:
    """Watches the object holding one trial's routed weight; stamps the arrival of the
    first stored version with weight 0 (an HTTPRoute's candidate backendRef, or the
    replicas of Argo Rollouts' canary ReplicaSet)."""

    def __init__(self, api: kubernetes.client.ApiClient, trial: Trial) -> None:
        self.api, self.trial = api, trial
        self.weight: float | None = trial.weight
        self.zero_at: float | None = None
        self._watch = kubernetes.watch.Watch()
        self._canary_rs = _argo_canary_rs(api, trial) if trial.tool == "argo-rollouts" else ""
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        t = self.trial
        if t.tool == "argo-rollouts":
            apps = kubernetes.client.AppsV1Api(self.api)
            stream = self._watch.stream(
                apps.list_namespaced_replica_set,
                t.namespace,
                field_selector=f"metadata.name={self._canary_rs}",
            )
        else:
            custom = kubernetes.client.CustomObjectsApi(self.api)
            stream = self._watch.stream(
                custom.list_namespaced_custom_object,
                *HTTPROUTES[:2],
                t.namespace,
                HTTPROUTES[2],
                field_selector=f"metadata.name={t.name}",
            )
        backend = f"{t.name}-canary" if t.tool == "flagger" else t.deployment
        try:
            for event in stream:
                now = time.time()
                obj = event["object"]
                if t.tool == "argo-rollouts":
                    weight = float(obj.spec.replicas or 0)
                else:
                    refs = [r for rule in obj["spec"].get("rules", []) for r in rule["backendRefs"]]
                    weight = float(sum(r.get("weight", 1) for r in refs if r["name"] == backend))
                self.weight = weight
                if weight == 0 and self.zero_at is None:
                    self.zero_at = now
                    return
        except Exception:  # stopped
            return

    def stop(self) -> None:
        self._watch.stop()


def _argo_canary_rs(api: kubernetes.client.ApiClient, trial: Trial) -> str:
    custom = kubernetes.client.CustomObjectsApi(api)
    rollout = custom.get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", trial.namespace, "rollouts", trial.name
    )
    current = rollout["status"]["currentPodHash"]
    apps = kubernetes.client.AppsV1Api(api)
    for rs in apps.list_namespaced_replica_set(trial.namespace).items:
        if (rs.metadata.labels or {}).get("rollouts-pod-template-hash") == current:
            return str(rs.metadata.name)
    raise RuntimeError(f"no canary ReplicaSet for {trial.name}")


def _wait_argo_healthy(
    api: kubernetes.client.ApiClient, namespace: str, names: list[str], timeout: float
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    while True:
        items = custom.list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "rollouts"
        )
        healthy = {
            r["metadata"]["name"]
            for r in items["items"]
            if (r.get("status") or {}).get("phase") == "Healthy"
        }
        if healthy >= set(names):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Argo Rollouts not Healthy: {sorted(set(names) - healthy)}")
        time.sleep(1)


# -- the table ------------------------------------------------------------------------


def table(trials: list[Trial]) -> str:
    lines = [
        f"{'tool':<14} {'setting':<9} {'interval':>8} {'n':>2} {'min s':>7} {'median s':>8} "
        f"{'max s':>7} {'median / ours':>13}  misses"
    ]
    medians: dict[tuple[str, str], float] = {}
    groups: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.tool, t.setting.name), []).append(t)
    for (tool, name), group in groups.items():
        times = [t.seconds for t in group if t.seconds is not None and not t.note]
        if times:
            medians[(tool, name)] = statistics.median(times)
    for (tool, name), group in groups.items():
        times = [t.seconds for t in group if t.seconds is not None and not t.note]
        interval = group[0].setting.interval(tool)
        ours = medians.get(("modelrollout", name))
        mine = medians.get((tool, name))
        ratio = f"{mine / ours:.1f}x" if ours and mine is not None else "-"
        stats = (
            f"{min(times):>7.1f} {statistics.median(times):>8.1f} {max(times):>7.1f}"
            if times
            else f"{'-':>7} {'-':>8} {'-':>7}"
        )
        misses = "; ".join(f"#{t.index}: {t.note}" for t in group if t.note)
        lines.append(
            f"{tool:<14} {name:<9} {interval:>7.0f}s {len(times):>2} {stats} {ratio:>13}  {misses}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--settings", default="defaults,fastest")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--json", type=Path, help="also write every trial here")
    args = parser.parse_args(argv)
    settings = [SETTINGS[s] for s in args.settings.split(",")]
    wanted = tuple(t for t in args.tools.split(",") if t)
    start = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    tools = ["modelrollout"] if "modelrollout" in wanted else []
    for peer, tool in ((FLAGGER, "flagger"), (ARGO_ROLLOUTS, "argo-rollouts")):
        if tool not in wanted:
            continue
        try:
            log(f"{peer.name} {peer.version}: {binary(peer)}")
            tools.append(tool)
        except PeerBuildError as error:
            log(f"{peer.name} did not build; going on without it:\n{error}")
    longest = max(s.interval(t) for s in settings for t in tools)
    trials = run(
        args.trials,
        settings,
        tuple(tools),
        log,
        arm_timeout=longest * 2 + 300,
        rollback_timeout=longest * 6 + 120,
    )
    print(table(trials))
    if args.json:
        rows = [
            {"tool": t.tool, "setting": t.setting.name, "trial": t.index,
             "seconds": t.seconds, "note": t.note} for t in trials
        ]  # fmt: skip
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(t.seconds is not None and not t.note for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
