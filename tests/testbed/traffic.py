"""Traffic driver: the data plane a mesh or gateway would be, and exactly that.

With no Envoy, Istio or Gateway implementation in the test bed, this stands in for
them: it reads the routing objects from the API server (every `refresh` seconds) and
sends a steady stream of POST /predict where they say, to the model servers that
`testbed.backends` runs for the pods. Nothing here decides a weight.

What it follows (`Route`):

- `httproute`: the backendRefs of rule `rule_index` (weight default 1, as in Gateway
  API), plus its RequestMirror filter (`percent` or `fraction`, default all);
- `virtualservice`: the destinations of the `http` entry named `route_name` (else the
  first; a lone destination without weight takes everything), plus `mirror` and
  `mirrorPercentage`;
- `service`: one Service selecting several Deployments (the replicas router): round
  robin over every ready pod, so the share follows the replica counts;
- `rollout`: a ModelRollout's `trafficRouting` (its HTTPRoute and ruleIndex, its
  VirtualService and routeName, or, for the replicas router, the pods of its stable
  and candidate Deployments), read again on every refresh.

A Service becomes the Deployments whose pod-template labels include its selector, and
a Deployment becomes its pods' server URLs (from `Backends.endpoints` in process, or a
supervisor's state file). Destinations are picked by smooth weighted round robin
(nginx's), so any window of n requests is within one request of its weights; pods of
a destination take turns. A mirror gets a copy of every request routed elsewhere and
its answer is thrown away, as a mesh does. Counts are per Deployment (`counts()`),
with the model `version` each routed request's answer named (what the client saw).

Pacing is open loop: request i is due at start + i/rps whatever the answers take;
`workers` threads send on kept-alive connections (give it rps x latency of them). A
request that would start over a second late (the pacer starved, or a second's worth
queued behind busy workers) is dropped and counted, never sent in a burst.

    PYTHONPATH=tests python -m testbed.traffic -n NS (--rollout NAME | --httproute NAME
        [--rule-index N] | --virtualservice NAME [--route-name R] | --service NAME)
        --state-file FILE [--rps 50] [--stats-file FILE] [--duration S] [--kubeconfig FILE]
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import signal
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Self, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from testbed.backends import StateFile, list_json, modelserver
from testbed.kubeconfig import add_kubeconfig_argument, client_from_kubeconfig

GATEWAY = ("gateway.networking.k8s.io", "v1", "httproutes")
ISTIO = ("networking.istio.io", "v1", "virtualservices")
ROLLOUTS = ("rollouts.mlops.io", "v1alpha1", "modelrollouts")
HEADERS = {"Content-Type": "application/json"}

Obj = dict[str, Any]
Endpoints = Callable[[str, str], list[str]]  # (namespace, deployment) -> server URLs
log = logging.getLogger("testbed.traffic")


def draw_row(rng: random.Random) -> Obj:
    """One request's features from server.py's training distributions: no drift."""
    server = modelserver()
    row: Obj = {name: round(rng.gauss(mu, sd), 4) for name, (mu, sd) in server.FEATURES.items()}
    row[server.CATEGORICAL] = rng.choice(server.COUNTRIES)
    return row


@dataclass(frozen=True)
class Route:
    """What the driver follows, in its namespace."""

    kind: Literal["rollout", "httproute", "virtualservice", "service"]
    name: str
    rule_index: int = 0  # httproute
    route_name: str | None = None  # virtualservice: the `http` entry; None: the first


@dataclass(frozen=True)
class Destination:
    """A weighted backend (a Service, or both Deployments of the replicas router)."""

    name: str
    weight: int
    endpoints: tuple[tuple[str, str], ...] = ()  # (deployment, url), one per ready pod


@dataclass(frozen=True)
class Plan:
    """Where requests go, as read from the API at one moment."""

    destinations: tuple[Destination, ...] = ()
    mirror: Destination | None = None
    mirror_percent: float = 100.0

    def weights(self) -> dict[str, int]:
        return {d.name: d.weight for d in self.destinations}


class SmoothWeighted:
    """nginx's smooth weighted round robin: each pick goes to the highest running credit."""

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = [max(0, w) for w in weights]
        self.total = sum(self.weights)
        self._credit = [0] * len(self.weights)

    def pick(self) -> int:
        for i, weight in enumerate(self.weights):
            self._credit[i] += weight
        best = max(range(len(self._credit)), key=self._credit.__getitem__)
        self._credit[best] -= self.total
        return best


class _Reader:
    """One refresh's reads: each object once, Services and Deployments once a namespace."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, endpoints: Endpoints):
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace, self.endpoints = namespace, endpoints
        self._lists: dict[tuple[str, str], dict[str, Obj]] = {}

    def plan(self, route: Route) -> Plan:
        if route.kind == "httproute":
            return self._httproute(route.name, route.rule_index)
        if route.kind == "virtualservice":
            return self._virtualservice(route.name, route.route_name)
        if route.kind == "service":
            return Plan((self._service(route.name, self.namespace, 1),))
        spec = self._custom(ROLLOUTS, route.name)["spec"]
        routing = spec["trafficRouting"]
        if gateway := routing.get("gatewayAPI"):
            return self._httproute(gateway["httpRoute"], gateway.get("ruleIndex", 0))
        if istio := routing.get("istio"):
            return self._virtualservice(istio["virtualService"], istio.get("routeName"))
        both = [spec["stable"]["deployment"], spec["candidate"]["deployment"]]
        return Plan((Destination("replicas", 1, self._pods(self.namespace, both)),))

    def _httproute(self, name: str, index: int) -> Plan:
        rules = self._custom(GATEWAY, name).get("spec", {}).get("rules") or []
        if index >= len(rules):
            return Plan()
        rule = rules[index]
        destinations = tuple(
            self._service(ref["name"], ref.get("namespace", self.namespace), ref.get("weight", 1))
            for ref in rule.get("backendRefs") or ()
            if ref.get("kind", "Service") == "Service"
        )
        for item in rule.get("filters") or ():
            if item.get("type") == "RequestMirror":
                mirror = item["requestMirror"]
                ref = mirror["backendRef"]
                fraction = mirror.get("fraction") or {}
                percent = mirror.get("percent", 100.0)
                if fraction:
                    percent = 100 * fraction["numerator"] / fraction.get("denominator", 100)
                target = self._service(ref["name"], ref.get("namespace", self.namespace), 0)
                return Plan(destinations, target, float(percent))
        return Plan(destinations)

    def _virtualservice(self, name: str, route_name: str | None) -> Plan:
        entries = self._custom(ISTIO, name).get("spec", {}).get("http") or []
        chosen = [e for e in entries if route_name is None or e.get("name") == route_name]
        if not chosen:
            return Plan()
        http = chosen[0]
        routes = http.get("route") or []
        lone = 100 if len(routes) == 1 else 0
        destinations = tuple(
            self._host(r["destination"]["host"], r.get("weight", lone)) for r in routes
        )
        if not http.get("mirror"):
            return Plan(destinations)
        percent = float((http.get("mirrorPercentage") or {}).get("value", 100.0))
        return Plan(destinations, self._host(http["mirror"]["host"], 0), percent)

    def _host(self, host: str, weight: int) -> Destination:
        """`svc`, `svc.ns` or `svc.ns.svc.cluster.local`."""
        parts = host.split(".")
        return self._service(parts[0], parts[1] if len(parts) > 1 else self.namespace, weight)

    def _service(self, name: str, namespace: str, weight: int) -> Destination:
        service = self._list("services", namespace).get(name) or {}
        selector = (service.get("spec") or {}).get("selector") or {}
        deployments = [
            deployment
            for deployment, d in self._list("deployments", namespace).items()
            if selector and selector.items() <= _template_labels(d).items()
        ]
        return Destination(name, int(weight), self._pods(namespace, sorted(deployments)))

    def _pods(self, namespace: str, deployments: list[str]) -> tuple[tuple[str, str], ...]:
        return tuple((d, url) for d in deployments for url in self.endpoints(namespace, d))

    def _list(self, kind: str, namespace: str) -> dict[str, Obj]:
        if (kind, namespace) not in self._lists:
            if kind == "services":
                items = list_json(self.core.list_namespaced_service, namespace)
            else:
                items = list_json(self.apps.list_namespaced_deployment, namespace)
            self._lists[kind, namespace] = {o["metadata"]["name"]: o for o in items}
        return self._lists[kind, namespace]

    def _custom(self, kind: tuple[str, str, str], name: str) -> Obj:
        group, version, plural = kind
        obj = self.custom.get_namespaced_custom_object(
            group, version, self.namespace, plural, name, _request_timeout=10
        )
        return cast(Obj, obj)


def _version(answer: bytes) -> str | None:
    try:
        version = json.loads(answer).get("version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def _template_labels(deployment: Obj) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels") or {}
    return labels


@dataclass
class Counts:
    """What the driver did since `start()`, per Deployment."""

    sent: dict[str, int] = field(default_factory=dict)  # routed there by the weights
    mirrored: dict[str, int] = field(default_factory=dict)  # copies sent by a mirror
    codes: dict[str, dict[str, int]] = field(default_factory=dict)  # answers (copies too)
    versions: dict[str, dict[str, int]] = field(default_factory=dict)  # answers' "version"
    failed: dict[str, int] = field(default_factory=dict)  # no answer (refused, reset, timeout)
    unroutable: int = 0  # the chosen destination had no ready pod (a mesh answers 503)
    dropped: int = 0  # never sent: over a second behind schedule
    seconds: float = 0.0

    @property
    def answered_per_second(self) -> float:
        answers = sum(sum(c.values()) for c in self.codes.values())
        return answers / self.seconds if self.seconds else 0.0


class TrafficDriver:
    """`start()` sends `rps` requests a second along `route` until `close()`."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespace: str,
        route: Route,
        endpoints: Endpoints,
        *,
        rps: float = 50.0,
        workers: int = 64,
        refresh: float = 0.5,
        seed: int = 0,
        timeout: float = 5.0,
    ) -> None:
        self.api, self.namespace, self.route, self.endpoints = api, namespace, route, endpoints
        self.rps, self.workers, self.refresh, self.timeout = rps, workers, refresh, timeout
        self.plan = Plan()
        self._rng = random.Random(seed)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="traffic")
        self._idle: dict[str, list[http.client.HTTPConnection]] = defaultdict(list)
        self._turn: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warned: set[str] = set()
        self._sent: Counter[str] = Counter()
        self._mirrored: Counter[str] = Counter()
        self._codes: Counter[tuple[str, str]] = Counter()
        self._versions: Counter[tuple[str, str]] = Counter()  # routed answers only
        self._failed: Counter[str] = Counter()
        self._unroutable = self._dropped = self._inflight = 0
        self._started = 0.0

    def start(self) -> Self:
        self._refresh()  # a plan before the first request
        self._started = time.monotonic()
        for target in (self._refresh_loop, self._pace):
            thread = threading.Thread(target=target, name=f"traffic{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counts(self) -> Counts:
        with self._lock:
            codes: dict[str, dict[str, int]] = defaultdict(dict)
            for (deployment, code), n in sorted(self._codes.items()):
                codes[deployment][code] = n
            versions: dict[str, dict[str, int]] = defaultdict(dict)
            for (deployment, version), n in sorted(self._versions.items()):
                versions[deployment][version] = n
            return Counts(
                dict(self._sent), dict(self._mirrored), dict(codes), dict(versions),
                dict(self._failed), self._unroutable, self._dropped,
                time.monotonic() - self._started,
            )  # fmt: skip

    # -- the routing view ---------------------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh):
            self._refresh()

    def _refresh(self) -> None:
        try:
            self.plan = _Reader(self.api, self.namespace, self.endpoints).plan(self.route)
        except ApiException as error:
            if error.status == 404:  # the route (or rollout) is gone: nowhere to send
                self.plan = Plan()
            self._warn(f"reading {self.route}: {error.status} {error.reason}")
        except Exception as error:  # keep the last plan through an API hiccup
            self._warn(f"reading {self.route}: {error!r}")

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    # -- sending ------------------------------------------------------------------------

    def _pace(self) -> None:
        interval, due = 1 / self.rps, time.monotonic()
        wrr, seen, mirror_credit = SmoothWeighted([]), Plan(), 0.0
        while not self._stop.is_set():
            late = time.monotonic() - due
            if late < 0:
                self._stop.wait(-late)
                continue
            if late > 1.0:  # stalled (a paused process, a starved core): skip, do not burst
                skipped = int(late / interval)
                with self._lock:
                    self._dropped += skipped
                due += skipped * interval
            due += interval
            plan = self.plan
            if plan is not seen:
                seen, weights = plan, [d.weight for d in plan.destinations]
                if weights != wrr.weights:
                    wrr = SmoothWeighted(weights)
            if wrr.total <= 0:
                with self._lock:
                    self._unroutable += 1
                continue
            chosen = plan.destinations[wrr.pick()]
            body = json.dumps({"features": draw_row(self._rng)}).encode()
            self._submit(chosen, body, mirror=False)
            if plan.mirror is not None and plan.mirror.name != chosen.name:
                mirror_credit += plan.mirror_percent  # deterministic, like the split
                if mirror_credit >= 100:
                    mirror_credit -= 100
                    self._submit(plan.mirror, body, mirror=True)

    def _submit(self, destination: Destination, body: bytes, mirror: bool) -> None:
        if not destination.endpoints:
            if not mirror:
                with self._lock:
                    self._unroutable += 1
            return
        turn = self._turn[destination.name]
        self._turn[destination.name] += 1
        deployment, url = destination.endpoints[turn % len(destination.endpoints)]
        with self._lock:
            if self._inflight >= self.workers + self.rps:
                self._dropped += 1
                return
            self._inflight += 1
            (self._mirrored if mirror else self._sent)[deployment] += 1
        self._pool.submit(self._send, deployment, url, body, mirror)

    def _send(self, deployment: str, url: str, body: bytes, mirror: bool) -> None:
        answer = self._post(url, body)
        with self._lock:
            self._inflight -= 1
            if answer is None:
                self._failed[deployment] += 1
                return
            code, version = answer
            self._codes[deployment, str(code)] += 1
            if not mirror and version is not None:
                self._versions[deployment, version] += 1

    def _post(self, url: str, body: bytes) -> tuple[int, str | None] | None:
        """POST /predict on a kept-alive connection; the status and the answer's model
        `version` (None if it names none), or None without an answer."""
        for reuse in (True, False):
            conn, reused = self._checkout(url, reuse)
            try:
                conn.request("POST", "/predict", body, HEADERS)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if reused:
                    continue  # the server closed a kept-alive connection: once more, fresh
                return None
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle[url].append(conn)
            return response.status, _version(data)
        return None

    def _checkout(self, url: str, reuse: bool) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if reuse and self._idle[url]:
                return self._idle[url].pop(), True
        address = urllib.parse.urlsplit(url).netloc
        return http.client.HTTPConnection(address, timeout=self.timeout), False


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.traffic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-n", "--namespace", required=True)
    which = parser.add_mutually_exclusive_group(required=True)
    for kind in ("rollout", "httproute", "virtualservice", "service"):
        which.add_argument(f"--{kind}", metavar="NAME")
    parser.add_argument("--rule-index", type=int, default=0, help="HTTPRoute rule (default 0)")
    parser.add_argument("--route-name", help="VirtualService http entry (default: the first)")
    parser.add_argument("--state-file", type=Path, required=True, help="testbed.backends state")
    parser.add_argument("--rps", type=float, default=50.0, help="requests a second (default 50)")
    parser.add_argument("--workers", type=int, default=64, help="at least rps x latency")
    parser.add_argument("--stats-file", type=Path, help="JSON counts, rewritten every second")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until killed)")
    add_kubeconfig_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s traffic: %(message)s")
    kind = next(k for k in ("rollout", "httproute", "virtualservice", "service") if vars(args)[k])
    route = Route(kind, vars(args)[kind], args.rule_index, args.route_name)  # type: ignore[arg-type]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    deadline = time.monotonic() + (args.duration or float("inf"))
    with client_from_kubeconfig(args.kubeconfig) as api:
        driver = TrafficDriver(
            api, args.namespace, route, StateFile(args.state_file).endpoints,
            rps=args.rps, workers=args.workers,
        )  # fmt: skip
        with driver:
            tick = 0
            while not stop.wait(1.0) and time.monotonic() < deadline:
                tick += 1
                _report(driver.counts(), args.stats_file, tick % 5 == 0)
        _report(driver.counts(), args.stats_file, True)


def _report(counts: Counts, stats_file: Path | None, log_it: bool) -> None:
    if stats_file is not None:
        tmp = stats_file.with_name(f".{stats_file.name}.tmp")
        tmp.write_text(json.dumps(asdict(counts)))
        os.replace(tmp, stats_file)
    if log_it:
        log.info(
            "%.1f answers/s; sent %s mirrored %s failed %s unroutable %d dropped %d",
            counts.answered_per_second, counts.sent, counts.mirrored,
            counts.failed, counts.unroutable, counts.dropped,
        )  # fmt: skip


if __name__ == "__main__":
    main()
