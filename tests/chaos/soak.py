"""The soak: rollouts started `concurrency` at a time, bad ones made bad when their
stage begins, the fault schedule applied meanwhile, then every invariant checked over
the recorded history (invariants.py) and the result reported."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaos import invariants
from chaos.bed import NAMESPACE, Bed
from chaos.faults import CRASH_BACKOFF, Injector
from chaos.invariants import Evidence
from chaos.plan import Fault, Plan, RolloutPlan
from chaos.record import TERMINAL, Recorder, RolloutVersion
from chaos.rollouts import GONE_BAD, Obj, create, manifests

TICK = 0.25
STUCK_GRACE = 60.0  # past every active rollout's bound: stop waiting, report them
SETTLE_SECONDS = 60.0  # after the last rollout: scale-downs and gauges catch up


@dataclass
class Soak:
    plan: Plan
    bed: Bed
    log: Callable[[str], None] = lambda line: None
    archive: Path | None = None  # where the recorder keeps every version it saw
    t0: float = field(default_factory=time.time)
    created: dict[str, float] = field(default_factory=dict)
    triggered: dict[str, tuple[int, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def run(self) -> Evidence:
        recorder = Recorder(
            self.bed.etcd_url, NAMESPACE, on_rollout=self._maybe_go_bad, archive=self.archive
        ).start()
        injector = Injector(self.bed, recorder)
        try:
            self._drive(recorder, injector)
        finally:
            injector.end_all()
        self._settle(recorder, injector)
        recorder.stop()
        rollouts, routes, deployments = recorder.snapshot()
        return Evidence(
            plan=self.plan,
            rollouts=rollouts,
            routes=routes,
            deployments=deployments,
            applied=injector.applied,
            runs=injector.runs,
            created=self.created,
            triggered=self.triggered,
            harness_routes=injector.harness_routes,
            finished=time.time(),
            problems=recorder.problems + self.problems,
            started=self.t0,
            crashes=injector.crashes,
        )

    def _say(self, message: str) -> None:
        self.log(f"[{time.time() - self.t0:6.0f}s] {message}")

    def _drive(self, recorder: Recorder, injector: Injector) -> None:
        queue = list(self.plan.rollouts)
        faults = list(self.plan.faults)
        active: dict[str, RolloutPlan] = {}
        creating: list[tuple[RolloutPlan, list[Obj]]] = []
        while queue or active:
            injector.due(time.time())
            now = time.time() - self.t0
            while faults and faults[0].at <= now:
                fault = faults.pop(0)
                self._say(f"fault {fault.kind} {_params(fault)}")
                injector.begin(fault)
            for name, v in list(recorder.latest.items()):
                if v.phase in TERMINAL and active.pop(name, None) is not None:
                    self.bed.models.stop(name)
                    self._say(f"{name} ({self._plan(name).kind}) {v.phase}")
            if queue and len(active) < self.plan.profile.concurrency:
                plan = queue.pop(0)
                self.bed.models.start(plan.name, plan.seed)
                creating.append((plan, manifests(plan, self.plan.profile, self.bed.proxy.url)))
                active[plan.name] = plan
            if creating:
                self._create(creating, injector)
            if active and self._all_stuck(active, injector):
                self.problems.append(f"gave up waiting for {sorted(active)}")
                return
            time.sleep(TICK)

    def _create(self, creating: list[tuple[RolloutPlan, list[Obj]]], injector: Injector) -> None:
        """Create the next objects; an API server that does not answer is tried again
        on the next turn of the loop, so faults still begin and end on time."""
        plan, todo = creating[0]
        while todo:
            try:
                version = create(self.bed.client, todo[0])
            except Exception:
                return
            made = todo.pop(0)
            if made["kind"] == "HTTPRoute" and version is not None:
                injector.harness_routes.add(int(version))
            if made["kind"] == "ModelRollout":
                self.created[plan.name] = time.time()
        creating.pop(0)

    def _all_stuck(self, active: dict[str, RolloutPlan], injector: Injector) -> bool:
        if any(name not in self.created for name in active):
            return False
        evidence = self._partial(injector)
        now = time.time()
        return all(
            now - self.created[name]
            > invariants.bound(evidence, plan, self.created[name]) + STUCK_GRACE
            for name, plan in active.items()
        )

    def _partial(self, injector: Injector) -> Evidence:
        return Evidence(
            self.plan, [], [], [], injector.applied, injector.runs, self.created, {}, set(),
            finished=time.time(),
        )  # fmt: skip

    def _plan(self, name: str) -> RolloutPlan:
        return next(p for p in self.plan.rollouts if p.name == name)

    def _maybe_go_bad(self, version: RolloutVersion) -> None:
        """In the recorder's thread: a bad candidate goes bad as its bad stage begins."""
        plan = self._plan(version.name)
        if plan.bad_stage is None or plan.name in self.triggered:
            return
        if version.stage < plan.bad_stage or version.phase in TERMINAL:
            return
        # Noted as it is sent: under load the exporter may apply it and answer too late,
        # the rollout roll back, and the soak stop the exporter before a retry.
        self.triggered[plan.name] = (version.stage, time.time())
        try:
            self.bed.models.configure(plan.name, GONE_BAD[plan.kind])
        except OSError as error:
            if plan.name in self.bed.models.running:  # not stopped: it never got there
                del self.triggered[plan.name]
                self.problems.append(f"{plan.name}: could not make it bad: {error}")

    def _settle(self, recorder: Recorder, injector: Injector) -> None:
        """Let scale-downs happen, then read the operator's gauges once they show
        every rollout's final state (or SETTLE_SECONDS have passed), and catch up."""
        deadline = time.time() + SETTLE_SECONDS
        while time.time() < deadline:
            recorder.wait_caught_up()
            evidence = self._settled(recorder, injector)
            if not invariants.deployments(evidence) and injector.scrape():
                final = injector.runs[-1]
                latest = dict(recorder.latest)
                if all(
                    final.phases.get(n) == v.phase and final.weights.get(n) == v.weight
                    for n, v in latest.items()
                ):
                    break
            time.sleep(1.0)
        injector.scrape()
        recorder.wait_caught_up()

    def _settled(self, recorder: Recorder, injector: Injector) -> Evidence:
        rollouts, routes, deployments = recorder.snapshot()
        return Evidence(
            self.plan, rollouts, routes, deployments, injector.applied, injector.runs,
            self.created, self.triggered, injector.harness_routes, finished=time.time(),
        )  # fmt: skip


def _params(fault: Fault) -> str:
    return ", ".join(
        f"{k} {v}"
        for k, v in vars(fault).items()
        if k not in ("at", "kind") and v not in (0, 0.0, "", False)
    )


def _when(fault: Fault) -> str:
    if fault.kind == "route-edit":
        return f"{fault.target} stage {fault.stage} + {fault.into:g}s, {fault.how}"
    return f"{fault.at:.1f}s"


def report(evidence: Evidence, violations: list[str]) -> str:
    """The counts, and on failure the seed, the replay command and the whole schedule."""
    plan, t0 = evidence.plan, evidence.started
    kinds = Counter(r.kind for r in plan.rollouts)
    versions = evidence.by_rollout()
    finals = Counter(seen[-1].phase for seen in versions.values() if seen)
    edits = [a for a in evidence.applied if a.fault.kind == "route-edit"]
    made = [a for a in edits if a.revision is not None]
    in_flight = invariants.edits_in_flight(evidence)
    applied: Counter[str] = Counter(
        a.fault.kind for a in evidence.applied if a.fault.kind != "route-edit"
    )
    applied.update(a.fault.kind for a in made)
    skipped = Counter(f.kind for f in plan.faults if f.kind != "route-edit") - applied
    unreadable = invariants.unreadable_windows(evidence)
    restored = invariants.restore_seconds(evidence)
    took, share = [], []
    for r in plan.rollouts:
        created, ended = evidence.created.get(r.name), invariants.ended_at(versions.get(r.name, []))
        if created is not None and ended is not None:
            took.append(ended - created)
            share.append((ended - created) / invariants.bound(evidence, r, created))
    bad = ", ".join(f"{k} {kinds[k]}" for k in ("error-spike", "latency", "drift"))
    lines = [
        f"chaos soak: seed {plan.seed}, {len(plan.rollouts)} rollouts, profile {plan.profile.name}",
        f"  rollouts: {kinds['healthy']} healthy, {len(plan.rollouts) - kinds['healthy']} bad "
        f"({bad})",
        f"  final phases: {dict(sorted(finals.items()))}",
        f"  faults applied: {dict(applied)}",
        f"  faults not reached (the rollouts had ended): {dict(skipped) or 'none'}",
        f"  route edits: {sum(f.kind == 'route-edit' for f in plan.faults)} planned, "
        f"{len(in_flight)} made on a rollout in flight, {len(made) - len(in_flight)} made "
        f"after it ended, {len(edits) - len(made)} not made",
        f"  Prometheus unreadable: {len(unreadable)} windows, "
        f"{sum(b - a for a, b in unreadable):.0f}s in all",
        f"  weight moves: {len(invariants.moves(evidence))}; "
        f"rollbacks: {len(invariants.recorded_rollbacks(evidence))}; "
        f"operator runs: {len(evidence.runs)}",
        f"  route edits in flight undone by the operator: {len(restored)} of {len(in_flight)}"
        + (
            f" ({statistics.median(restored):.1f}s median, {max(restored):.1f}s max)"
            if restored
            else ""
        ),
        f"  rollout durations: median {statistics.median(took) if took else 0:.0f}s, max "
        f"{max(took, default=0):.0f}s; at most {max(share, default=0):.0%} of its bound",
        f"  soak took {evidence.finished - t0:.0f}s",
        f"  operator exits on its own (restarted after {CRASH_BACKOFF:g}s, as a kubelet would): "
        f"{len(evidence.crashes)}",
        *(f"    - {crash}" for crash in evidence.crashes),
        f"  violations: {len(violations)}",
    ]
    lines += [f"    - {v}" for v in violations]
    lines.append("  the faults as applied (seconds after the start):")
    lines += [
        f"    {a.fault.kind} (planned {_when(a.fault)}): {a.started - t0:.1f}s.."
        f"{(a.ended or evidence.finished) - t0:.1f}s {a.target or ''} {a.note}".rstrip()
        for a in evidence.applied
    ]
    if violations:
        lines += [f"replay: {plan.replay()}", "the plan (seed, rollouts, faults):", plan.describe()]
    return "\n".join(lines)
