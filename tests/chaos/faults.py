"""Carrying out the fault schedule, and noting when each fault really began and ended.

Everything here runs on the soak's main thread: the processes it restarts (operator,
Prometheus, etcd, kube-apiserver) die with the thread that spawned them
(testbed.procs), and the main thread outlives them all. A restart that waits for
readiness holds the loop for those seconds; the times noted are the real ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml
from prometheus_client.parser import text_string_to_metric_families

from chaos.bed import NAMESPACE, Bed
from chaos.invariants import Applied, OperatorRun
from chaos.plan import Fault
from chaos.record import TERMINAL, Recorder
from integration import objects

BACK_WITHIN = 180.0  # a restarted component not ready by then: the test bed broke
IN_FLIGHT = ("Progressing", "Paused")  # a route edit is made only on a rollout in these
CRASH_BACKOFF = 5.0  # an operator that exited by itself is started again after this (a kubelet)
Check = Callable[[], bool]


@dataclass
class Injector:
    """Begins each fault, ends it when its time is up, and notes when a restarted
    component is ready again, without holding the soak's loop while it comes up."""

    bed: Bed
    recorder: Recorder
    applied: list[Applied] = field(default_factory=list)
    runs: list[OperatorRun] = field(default_factory=list)
    harness_routes: set[int] = field(default_factory=set)
    _ends: list[tuple[float, Applied, Callable[[], None], Check | None]] = field(
        default_factory=list
    )
    _polls: list[tuple[float, Applied, Check]] = field(default_factory=list)
    _edits: list[Applied] = field(default_factory=list)  # route edits still to make
    _entered: dict[int, float] = field(default_factory=dict)  # edit -> its target's stage seen
    crashes: list[str] = field(default_factory=list)  # the operator exiting by itself
    _revive_at: float | None = None
    _down: bool = False  # the operator is down on purpose (operator-kill)

    def __post_init__(self) -> None:
        self.runs.append(OperatorRun(started=time.time()))

    def begin(self, fault: Fault) -> None:
        applied = Applied(fault, started=time.time())
        self.applied.append(applied)
        kind, bed = fault.kind, self.bed
        if kind == "operator-kill":
            if not self._down and self._revive_at is None:
                self.scrape()
                bed.operator.kill()
                self.runs[-1].ended = time.time()
            self._down, self._revive_at = True, None
            applied.started = time.time()
            self._end_after(applied, self._operator_up)
        elif kind == "prometheus-kill":
            bed.prometheus.kill()
            applied.started = time.time()
            self._end_after(applied, bed.prometheus.launch, bed.prometheus.ready)
        elif kind in ("proxy-latency", "proxy-stall", "proxy-reset"):
            bed.proxy.set_mode(kind.removeprefix("proxy-"), fault.delay)  # type: ignore[arg-type]
            applied.started = time.time()
            self._end_after(applied, lambda: bed.proxy.set_mode("pass"))
        elif kind == "apiserver-restart":
            bed.control_plane.restart_apiserver(kill=fault.hard, wait=False)
            self._poll(applied, bed.control_plane.ready)
        elif kind == "etcd-restart":
            bed.control_plane.restart_etcd(kill=fault.hard, wait=False)
            self._poll(applied, bed.control_plane.etcd_healthy)
        else:
            self._edits.append(applied)
            self._try_edits()

    def due(self, now: float) -> None:
        """End the faults whose time is up; note the components that came back."""
        self._try_edits()
        self._watch_operator(now)
        for entry in sorted(self._ends, key=lambda e: e[0]):
            at, applied, end, ready = entry
            if at <= now:
                self._ends.remove(entry)
                end()
                if ready is None:
                    applied.ended = time.time()
                else:
                    self._poll(applied, ready)
        for entry in list(self._polls):
            deadline, applied, ready = entry
            if ready():
                self._polls.remove(entry)
                applied.ended = time.time()
            elif time.time() > deadline:
                raise RuntimeError(f"{applied.fault.kind}: not back after {BACK_WITHIN:.0f}s")

    def end_all(self) -> None:
        """End every fault now and wait for what restarts; drop edits not made."""
        for applied in self._edits:
            applied.ended = time.time()
            applied.note = f"not made: {applied.note or 'its stage never came'}"
        self._edits.clear()
        self.due(float("inf"))
        while self._polls:
            time.sleep(0.5)
            self.due(float("inf"))

    def busy(self) -> bool:
        """True while a fault is in progress."""
        return bool(self._ends or self._polls)

    def _end_after(
        self, applied: Applied, end: Callable[[], None], ready: Check | None = None
    ) -> None:
        self._ends.append((applied.started + applied.fault.duration, applied, end, ready))

    def _poll(self, applied: Applied, ready: Check) -> None:
        self._polls.append((time.time() + BACK_WITHIN, applied, ready))

    def _operator_up(self) -> None:
        if not self.bed.operator.proc.alive():
            self.bed.operator.start()
            self.runs.append(OperatorRun(started=time.time()))
        self._down, self._revive_at = False, None

    def _watch_operator(self, now: float) -> None:
        """An operator that exits by itself is noted, and started again after
        CRASH_BACKOFF, as a kubelet would."""
        if self._revive_at is not None and now >= self._revive_at:
            self._operator_up()
        popen = self.bed.operator.proc.popen
        if self._down or self._revive_at is not None or popen is None:
            return
        code = popen.poll()
        if code is None:
            return
        tail = self.bed.operator.proc.tail(5).replace("\n", " | ")[-600:]
        self.crashes.append(f"{time.time():.1f}: exit code {code}: {tail}")
        self.runs[-1].ended = time.time()
        self._revive_at = time.time() + CRASH_BACKOFF

    # -- a route edited by someone else -----------------------------------------------

    def _try_edits(self) -> None:
        """Make the route edits that are due. Each waits for its target to be in its
        stage (or a later one) for `into` seconds, then is tried on every turn of the
        loop until made, or until the rollout is no longer in flight (then it is noted
        as not made: the report says so, and the CI test fails on it)."""
        now = time.time()
        for applied in list(self._edits):
            fault = applied.fault
            latest = self.recorder.latest.get(fault.target)
            if latest is None or (latest.stage < fault.stage and latest.phase not in TERMINAL):
                continue  # not yet in its stage
            if latest.phase not in IN_FLIGHT:
                self._edits.remove(applied)
                applied.ended = now
                applied.note = (
                    f"not made: {fault.target} was {latest.phase} at stage {latest.stage} "
                    f"{applied.note}"
                ).rstrip()
                continue
            entered = self._entered.setdefault(id(applied), now)
            if now < entered + fault.into:
                continue
            if self._edit_route(applied):
                self._edits.remove(applied)
                applied.ended = applied.started

    def _edit_route(self, applied: Applied) -> bool:
        fault = applied.fault
        name = applied.target = fault.target
        # the new version's revision, and no wait on an API server that does not answer
        get_version = ["-o", "jsonpath={.metadata.resourceVersion}", "--request-timeout=10s"]
        try:
            if fault.how == "flux-ssa":  # Git's route, weights and all, forced back
                route = objects.http_route(name, f"{name}-v1", f"{name}-v2")
                out = self.bed.control_plane.kubectl(
                    "apply", "--server-side", "--force-conflicts",
                    "--field-manager=kustomize-controller", "-n", NAMESPACE, "-f", "-",
                    *get_version, input=yaml.safe_dump(route),
                )  # fmt: skip
            else:  # a person moves the weights by hand
                patch = [
                    {"op": "replace", "path": f"/spec/rules/0/backendRefs/{i}/weight", "value": w}
                    for i, w in enumerate((100 - fault.weight, fault.weight))
                ]
                out = self.bed.control_plane.kubectl(
                    "patch", "httproute", name, "-n", NAMESPACE, "--type=json",
                    "--field-manager=kubectl-patch", "-p", json.dumps(patch), *get_version,
                )  # fmt: skip
        except RuntimeError as error:
            applied.note = f"kubectl failed: {str(error).strip()[-200:]}"
            return False
        applied.revision = int(out.strip())
        stage = self.recorder.latest[name].stage
        applied.started, applied.note = time.time(), f"at stage {stage}"
        self.harness_routes.add(applied.revision)
        return True

    # -- the operator's own metrics ---------------------------------------------------

    def scrape(self) -> bool:
        """Read /metrics into the current run; False if it did not answer."""
        run = self.runs[-1]
        try:
            text = self.bed.operator.metrics()
        except OSError:
            return False
        rollbacks: dict[tuple[str, str], float] = {}
        phases: dict[str, str] = {}
        weights: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("namespace") != NAMESPACE:
                    continue
                if sample.name == "modelrollout_rollbacks_total":
                    rollbacks[(labels["name"], labels["reason"])] = sample.value
                elif sample.name == "modelrollout_phase" and sample.value == 1:
                    phases[labels["name"]] = labels["phase"]
                elif sample.name == "modelrollout_weight":
                    weights[labels["name"]] = sample.value
        run.scraped, run.rollbacks, run.phases, run.weights = (
            time.time(),
            rollbacks,
            phases,
            weights,
        )
        return True
