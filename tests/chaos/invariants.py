"""What must hold over the whole recorded history of a soak. Pure functions of the
evidence: the plan, every stored version (record.py), the faults as applied, and the
operator's /metrics read before each kill and at the end.

1. No healthy-vs-bad mistake. A healthy candidate ends Succeeded and is never
   RollingBack, RolledBack or Failed: every rollout has noDataPolicy Pause, so no
   outage is a reason to roll back. A bad one ends RolledBack, at the stage at which
   it went bad, for its own reason (error spike: AbortThresholdBreached; latency:
   FailureLimitReached; drift: DriftDetected), and never has weight 100, in status or
   in any route write of the operator.
2. Weights. Every status has the weight of its stage (0 before stage 1 and from a
   rollback on); stages go up one at a time; every route write of the operator gives
   the candidate at most the weight of the status stored before it, and the two
   weights sum to 100. No weight moved while Prometheus was unreadable: a move is
   decided by a pass that read Prometheus at T (its metrics' checkedAt, whole seconds;
   the history entry's time, when the decision is dated, if it read nothing) and is
   stored at S (the recorder's arrival time); it is a violation when [T, S] lies wholly
   inside one unreadable window (Prometheus killed until ready again, the proxy
   stalling or resetting), as no query of that pass could have been answered.
3. Every rollout ends (Succeeded, RolledBack or Failed) within `bound` of its creation.
4. The operator's metrics agree: per rollout and reason, the rollbacks counted across
   the operator's runs equal the rollbacks recorded, less those a kill may have cut off
   (stored after the run's last /metrics read); at the end each rollout's phase and
   weight gauges equal its final phase and weight.
5. Deployments: replicas change only to 0, only for a rollout with scaleDownDelay,
   only after it ended, and on the side that lost (the stable after Succeeded, the
   candidate after RolledBack).
6. Every route edit by someone else on a rollout in flight is undone by the operator.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaos.plan import ROLLBACK_REASON, UNREADABLE, Fault, Plan, RolloutPlan, expected_seconds
from chaos.record import (
    TERMINAL,
    DeploymentVersion,
    RolloutVersion,
    RouteVersion,
    epoch,
)

FOREIGN = ("kustomize-controller", "kubectl-patch")  # the soak's other field managers
READY_SLACK = 30.0  # pods Ready (kwok) and the first pass of a new rollout
OPERATOR_START = 30.0  # a restarted operator: imports, kopf's watches, the first passes
ERROR_BACKOFF = 5.0  # modelrollout.controller.daemon.ERROR_BACKOFF_SECONDS
KOPF_BACKOFF = 21.0  # the longest of kopf's error_backoffs between two API attempts
RollbackKey = tuple[str, str]  # (rollout, reason)


@dataclass
class Applied:
    """A fault as it was carried out, in wall-clock seconds."""

    fault: Fault
    started: float
    ended: float | None = None
    target: str | None = None  # route-edit: the rollout whose route was edited
    revision: int | None = None  # route-edit: the foreign write's revision
    note: str = ""


@dataclass
class OperatorRun:
    """One operator process; its counters as last read before it died (or at the end)."""

    started: float
    scraped: float | None = None
    rollbacks: dict[RollbackKey, float] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)  # gauge == 1
    weights: dict[str, float] = field(default_factory=dict)
    ended: float | None = None


@dataclass
class Evidence:
    plan: Plan
    rollouts: list[RolloutVersion]
    routes: list[RouteVersion]
    deployments: list[DeploymentVersion]
    applied: list[Applied]
    runs: list[OperatorRun]
    created: dict[str, float]
    triggered: dict[str, tuple[int, float]]  # bad rollout -> (stage, time) made bad
    harness_routes: set[int]  # revisions of route writes by the soak itself
    finished: float  # when the soak stopped waiting
    problems: list[str] = field(default_factory=list)  # the recorder's and the soak's
    started: float = 0.0  # when the soak started
    crashes: list[str] = field(default_factory=list)  # the operator exiting by itself

    def by_rollout(self) -> dict[str, list[RolloutVersion]]:
        out: dict[str, list[RolloutVersion]] = defaultdict(list)
        for version in sorted(self.rollouts, key=lambda v: v.revision):
            out[version.name].append(version)
        return out


def check(e: Evidence) -> list[str]:
    """Every violation, each a sentence naming the rollout or fault."""
    return [
        *(f"recorder: {p}" for p in e.problems),
        *outcomes(e),
        *status_weights(e),
        *route_writes(e),
        *moves_while_unreadable(e),
        *deadlines(e),
        *metrics(e),
        *deployments(e),
        *foreign_edits(e),
    ]


def plans(e: Evidence) -> dict[str, RolloutPlan]:
    return {r.name: r for r in e.plan.rollouts}


# -- 1. outcomes -------------------------------------------------------------------


def outcomes(e: Evidence) -> list[str]:
    out = []
    versions = e.by_rollout()
    for name, plan in plans(e).items():
        seen = versions.get(name, [])
        if not seen:
            out.append(f"{name}: never stored")
            continue
        final = seen[-1].phase
        if not plan.bad:
            bad = sorted({v.phase for v in seen} & {"RollingBack", "RolledBack", "Failed"})
            if bad or final != "Succeeded":
                out.append(f"{name} (healthy): ended {final}, passed through {bad}")
            continue
        if final != "RolledBack" or any(v.phase == "Succeeded" or v.weight == 100 for v in seen):
            out.append(f"{name} ({plan.kind}): ended {final}, or reached 100% in status")
        out += _rollback_cause(name, plan, seen, e.triggered.get(name))
    return out


def _rollback_cause(
    name: str, plan: RolloutPlan, seen: list[RolloutVersion], triggered: tuple[int, float] | None
) -> list[str]:
    began = next((v for v in seen if v.phase == "RollingBack"), None)
    if began is None:
        return []  # reported with the final phase
    reason = (began.last or {}).get("reason")
    out = []
    if reason != ROLLBACK_REASON[plan.kind]:
        out.append(f"{name} ({plan.kind}): rolled back for {reason}, not its own fault")
    if triggered is None:
        out.append(f"{name} ({plan.kind}): rolled back at stage {began.stage} before it went bad")
    elif began.stage != triggered[0]:
        out.append(
            f"{name} ({plan.kind}): went bad at stage {triggered[0]}, "
            f"rolled back at stage {began.stage}"
        )
    if triggered is not None and plan.stages[triggered[0] - 1][0] == 100:
        out.append(f"{name}: the soak made it bad only at the last stage (harness lag)")
    return out


# -- 2. weights --------------------------------------------------------------------


def stage_weight(plan: RolloutPlan, version: RolloutVersion) -> int:
    if version.phase in ("RollingBack", "RolledBack") or version.stage == 0:
        return 0
    return plan.stages[version.stage - 1][0]


def status_weights(e: Evidence) -> list[str]:
    out = []
    by_plan = plans(e)
    for name, seen in e.by_rollout().items():
        plan = by_plan[name]
        previous = 0
        for v in seen:
            if not 0 <= v.stage <= len(plan.stages):
                out.append(f"{name}@{v.revision}: stage {v.stage} of {len(plan.stages)}")
                continue
            if v.stage not in (previous, previous + 1):
                out.append(f"{name}@{v.revision}: stage {previous} -> {v.stage}")
            previous = v.stage
            if v.weight != stage_weight(plan, v):
                out.append(
                    f"{name}@{v.revision}: weight {v.weight} at stage {v.stage} "
                    f"({v.phase}), its stage says {stage_weight(plan, v)}"
                )
    return out


def writer(route: RouteVersion, before: RouteVersion | None, harness: set[int]) -> str:
    """Who stored this version: the soak (its creation, its edits by their revision),
    or a foreign field manager whose entry is new or has a new time (an edit whose
    response was lost); else the operator. An entry that shrinks or goes away lost its
    fields to the operator's forced apply: that write is the operator's."""
    if before is None or route.revision in harness:
        return "harness"
    for manager in FOREIGN:
        now = route.managers.get(manager)
        if now is not None and now != before.managers.get(manager):
            return "harness"
    return "operator"


def operator_route_writes(e: Evidence) -> Iterable[tuple[RouteVersion, str]]:
    """(version, writer) for every route version, in revision order per route."""
    last: dict[str, RouteVersion] = {}
    for route in sorted(e.routes, key=lambda r: r.revision):
        yield route, writer(route, last.get(route.name), e.harness_routes)
        last[route.name] = route


def route_writes(e: Evidence) -> list[str]:
    out = []
    statuses = {name: ([v.revision for v in seen], seen) for name, seen in e.by_rollout().items()}
    by_plan = plans(e)
    for route, who in operator_route_writes(e):
        if who != "operator":
            continue
        stable, candidate = route.weights
        where = f"route {route.name}@{route.revision}"
        if stable is None or candidate is None or stable + candidate != 100:
            out.append(f"{where}: weights {route.weights} do not sum to 100")
            continue
        revisions, seen = statuses.get(route.name, ([], []))
        index = bisect.bisect_left(revisions, route.revision) - 1
        if index < 0:
            out.append(f"{where}: written before any status")
            continue
        status = seen[index]
        if candidate > status.weight:
            out.append(
                f"{where}: candidate {candidate}% above the stored status' "
                f"{status.weight}% (stage {status.stage})"
            )
        if by_plan[route.name].bad and candidate == 100:
            out.append(f"{where}: a bad candidate given 100%")
    return out


def unreadable_windows(e: Evidence) -> list[tuple[float, float]]:
    spans = sorted(
        (a.started, a.ended if a.ended is not None else e.finished)
        for a in e.applied
        if a.fault.kind in UNREADABLE
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def moves(e: Evidence) -> list[tuple[RolloutVersion, float]]:
    """Every stored change of a rollout's weight, with the time T its pass read."""
    out = []
    for seen in e.by_rollout().values():
        for before, v in itertools.pairwise(seen):
            if v.weight != before.weight:
                decided = epoch((v.last or {}).get("time"))
                began = min(t for t in (v.read_at, decided, v.seen) if t is not None)
                out.append((v, began))
    return out


def moves_while_unreadable(e: Evidence) -> list[str]:
    out = []
    windows = unreadable_windows(e)
    for v, began in moves(e):
        for start, end in windows:
            if start <= began and v.seen <= end:
                out.append(
                    f"{v.name}@{v.revision}: weight moved to {v.weight} by a pass from "
                    f"{began:.1f} to {v.seen:.1f}, inside unreadable {start:.1f}..{end:.1f}"
                )
    return out


# -- 3. every rollout ends, within its bound ---------------------------------------


def recovery(kind: str, interval: float, timeout: float) -> float:
    """After a fault ends, how long until rollouts can move again."""
    return {
        "operator-kill": OPERATOR_START,
        "prometheus-kill": 2 * interval,  # the rate windows fill again, then a pass
        "proxy-stall": timeout + interval,
        "proxy-reset": timeout + interval,
        "proxy-latency": interval,
        # ready again, then kopf's next attempt, a failed pass' backoff, a pass
        "apiserver-restart": KOPF_BACKOFF + ERROR_BACKOFF + interval,
        "etcd-restart": KOPF_BACKOFF + ERROR_BACKOFF + interval,
    }.get(kind, 0.0)


def bound(e: Evidence, plan: RolloutPlan, created: float) -> float:
    """Its run without faults (plan.expected_seconds) plus READY_SLACK, plus, for
    every fault that overlaps it, the fault's duration and recovery. A route edit takes
    no time (recovery 0): a pending one, waiting for its target's stage, adds nothing."""
    profile = e.plan.profile
    base = expected_seconds(plan, profile) + READY_SLACK
    total = base
    for _ in range(len(e.applied) + 1):  # grows to a fixed point
        extra = sum(
            (a.ended or e.finished)
            - a.started
            + recovery(a.fault.kind, profile.interval, profile.timeout)
            for a in e.applied
            if a.fault.kind != "route-edit"
            and a.started < created + total
            and (a.ended or e.finished) > created
        )
        if base + extra == total:
            break
        total = base + extra
    return total


def ended_at(seen: list[RolloutVersion]) -> float | None:
    return next((v.seen for v in seen if v.phase in TERMINAL), None)


def deadlines(e: Evidence) -> list[str]:
    out = []
    versions = e.by_rollout()
    for name, plan in plans(e).items():
        created = e.created.get(name)
        if created is None:
            out.append(f"{name}: never created by the soak")
            continue
        limit = bound(e, plan, created)
        end = ended_at(versions.get(name, []))
        took = (end if end is not None else e.finished) - created
        if end is None or took > limit:
            state = (
                f"ended after {took:.0f}s" if end is not None else f"not ended after {took:.0f}s"
            )
            out.append(f"{name}: {state}, bound {limit:.0f}s")
    return out


# -- 4. the operator's own metrics -------------------------------------------------


def recorded_rollbacks(e: Evidence) -> list[tuple[RollbackKey, float]]:
    out = []
    for name, seen in e.by_rollout().items():
        for before, v in itertools.pairwise(seen):
            if v.phase == "RollingBack" and before.phase != "RollingBack":
                out.append(((name, str((v.last or {}).get("reason"))), v.seen))
    return out


def metrics(e: Evidence) -> list[str]:
    out = []
    counted: Counter[RollbackKey] = Counter()
    for run in e.runs:
        counted.update(run.rollbacks)
    recorded = recorded_rollbacks(e)
    # stored after a run's last read and before the next run started: maybe uncounted
    blind = [
        (run.scraped or run.started, later.started)
        for run, later in zip(e.runs, e.runs[1:], strict=False)
    ]
    keys = {key for key, _ in recorded} | set(counted)
    for key in sorted(keys):
        times = [t for k, t in recorded if k == key]
        missable = sum(1 for t in times if any(a < t <= b for a, b in blind))
        if not len(times) - missable <= counted[key] <= len(times):
            out.append(
                f"{key[0]}: modelrollout_rollbacks_total{{reason={key[1]}}} summed over "
                f"{len(e.runs)} operator runs is {counted[key]:g}, recorded {len(times)} "
                f"({missable} after a run's last read)"
            )
    if not e.runs or e.runs[-1].scraped is None:
        return [*out, "the operator's /metrics could not be read at the end"]
    final = e.runs[-1]
    for name, seen in e.by_rollout().items():
        last = seen[-1]
        if final.phases.get(name) != last.phase or final.weights.get(name) != last.weight:
            out.append(
                f"{name}: gauges say phase {final.phases.get(name)} weight "
                f"{final.weights.get(name)}, stored {last.phase} {last.weight}"
            )
    return out


# -- 5. Deployments ----------------------------------------------------------------


def deployments(e: Evidence) -> list[str]:
    out = []
    versions = e.by_rollout()
    by_plan = plans(e)
    first: dict[str, int | None] = {}
    for d in sorted(e.deployments, key=lambda d: d.revision):
        initial = first.setdefault(d.name, d.replicas)
        if d.replicas == initial:
            continue
        name, side = d.name.rsplit("-", 1)
        plan = by_plan.get(name)
        seen = versions.get(name, [])
        ended = next((v for v in seen if v.phase in TERMINAL), None)
        loser = {"Succeeded": "v1", "RolledBack": "v2"}.get(ended.phase if ended else "")
        if (
            d.replicas != 0
            or plan is None
            or not plan.scale_down
            or ended is None
            or d.revision < ended.revision
            or side != loser
        ):
            out.append(f"deployment {d.name}@{d.revision}: replicas {initial} -> {d.replicas}")
    for name, plan in by_plan.items():
        seen = versions.get(name, [])
        if not plan.scale_down or not seen or seen[-1].phase not in ("Succeeded", "RolledBack"):
            continue
        loser = f"{name}-v1" if seen[-1].phase == "Succeeded" else f"{name}-v2"
        last = [d for d in e.deployments if d.name == loser]
        if not last or max(last, key=lambda d: d.revision).replicas != 0:
            out.append(f"{name}: scaleDownDelay set, but {loser} was not scaled to 0")
    return out


# -- 6. route edits by someone else ------------------------------------------------


def edits_in_flight(e: Evidence) -> list[Applied]:
    """The route edits made while their rollout was in flight: made (a revision), and
    stored before the rollout's first terminal status."""
    versions = e.by_rollout()
    out = []
    for applied in e.applied:
        if applied.fault.kind != "route-edit" or applied.revision is None:
            continue
        seen = versions.get(applied.target or "", [])
        ended = next((v.revision for v in seen if v.phase in TERMINAL), None)
        if ended is None or applied.revision < ended:
            out.append(applied)
    return out


def foreign_edits(e: Evidence) -> list[str]:
    out = []
    writes = list(operator_route_writes(e))
    for applied in edits_in_flight(e):
        name = applied.target or ""
        restored = any(
            r.name == name and who == "operator" and r.revision > (applied.revision or 0)
            for r, who in writes
        )
        if not restored:
            out.append(f"route {name}: the edit @{applied.revision} ({applied.fault.how}) stayed")
    return out


def restore_seconds(e: Evidence) -> list[float]:
    """For each foreign edit on a rollout in flight, seconds until the operator's next
    write of that route."""
    writes = list(operator_route_writes(e))
    out = []
    for applied in edits_in_flight(e):
        revision = applied.revision or 0
        edit = next((r for r, _ in writes if r.revision == revision), None)
        after = [
            r for r, who in writes
            if r.name == applied.target and who == "operator" and r.revision > revision
        ]  # fmt: skip
        if edit is not None and after:
            out.append(after[0].seen - edit.seen)
    return out
