"""The rollout state machine: `step(spec, status, observations, now)`.

It returns the next status and the actions to take; the controller persists the
status first and then performs the actions. The status is the only memory, and
every action is idempotent (a route target, a replica count), so an operator
killed at any moment calls `step` again and carries on where the last one stopped:
no stage repeated or skipped, no weight moved backwards, no transition announced
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from modelrollout.api.durations import parse_duration
from modelrollout.api.spec import CandidateRef, ModelRolloutSpec, StableRef, Stage
from modelrollout.api.status import (
    HISTORY_LIMIT,
    TERMINAL_PHASES,
    DriftStatus,
    HistoryEntry,
    MetricStatus,
    ModelRolloutStatus,
    Phase,
    SamplesStatus,
)
from modelrollout.core.conditions import (
    STALLED,
    condition,
    kstatus_conditions,
    set_condition,
    timestamp,
)
from modelrollout.core.stages import (
    candidate_replicas,
    effective_weight,
    ready_replicas_needed,
    rollout_identity,
)

ACTIONS = frozenset({"promote", "promote-full", "abort", "retry", "pause", "resume"})
# Stalled reasons a later tick re-checks: nothing has moved yet, and the fix
# (creating a Deployment, finishing the other rollout) needs no change to this one.
PREFLIGHT_REASONS = frozenset({"TargetNotFound", "ClaimConflict", "RoutingInvalid"})
PREFLIGHT_RECHECK_SECONDS = 10.0
DEFAULT_TICK_SECONDS = 10.0
FAST_TICK_SECONDS = 1.0

EventType = Literal["Normal", "Warning"]

_DRIFT_REASONS = {
    "stable": "NoDrift",
    "warn": "DriftWarning",
    "drift": "DriftDetected",
    "inconclusive": "DriftInconclusive",
    "nodata": "DriftNoData",
    "invalid": "DriftBinsMismatch",
}


@dataclass(frozen=True)
class Workload:
    """A Deployment as seen this tick."""

    replicas: int
    ready: int
    available: int


@dataclass(frozen=True)
class RouteObservation:
    """The routing object compared with the status' route target."""

    matches: bool
    weight: float | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Judgement:
    """The analysis' and drift gate's combined verdict for this tick.

    pass: the stage may complete; wait: not yet (failing SLO, no data, inconclusive);
    pause: blind (Prometheus unreachable), hold and say so; rollback: roll back now;
    invalid: the analysis cannot work as written (PromQL refused): fail, move nothing.
    """

    verdict: Literal["pass", "wait", "pause", "rollback", "invalid"]
    reason: str = "AnalysisPassed"
    message: str = ""
    samples: float | None = None


@dataclass(frozen=True)
class Observations:
    """What the adapters saw this tick. A None workload or route means it is missing."""

    generation: int
    missing: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    stable: Workload | None = None
    candidate: Workload | None = None
    route: RouteObservation | None = None
    judgement: Judgement | None = None
    action: str | None = None
    metrics: tuple[MetricStatus, ...] | None = None
    samples: SamplesStatus | None = None
    analysis_errors: int | None = None
    drift: DriftStatus | None = None


@dataclass(frozen=True)
class RouteTarget:
    """The state the router makes true: the candidate's weight and mirroring, and
    (replicas router) the weight its replicas are provisioned for."""

    weight: int
    mirror: bool
    candidate_floor: int
    total_replicas: int | None


@dataclass(frozen=True)
class SetRoute:
    target: RouteTarget


@dataclass(frozen=True)
class Scale:
    deployment: str
    replicas: int


@dataclass(frozen=True)
class EmitEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ConsumeAction:
    """Remove the action annotation; done before the status is written, so a crash
    loses an action rather than applying it twice."""

    name: str


Action = SetRoute | Scale | EmitEvent | ConsumeAction


@dataclass(frozen=True)
class Decision:
    status: ModelRolloutStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    changed: bool = field(default=True)


def preflight_failed(status: ModelRolloutStatus) -> bool:
    """Failed before the start for a reason a later tick re-checks."""
    stalled = condition(status.conditions, STALLED)
    return (
        status.phase == "Failed"
        and stalled is not None
        and stalled.status == "True"
        and stalled.reason in PREFLIGHT_REASONS
    )


def awaiting_start(status: ModelRolloutStatus) -> bool:
    """No traffic has moved yet and the rollout still means to start."""
    return status.stage == 0 and (status.phase not in TERMINAL_PHASES or preflight_failed(status))


def route_target(status: ModelRolloutStatus) -> RouteTarget:
    floor = max(status.weight, status.preparing_weight or 0)
    return RouteTarget(status.weight, status.mirroring, floor, status.total_replicas)


def step(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    observations: Observations,
    now: datetime,
) -> Decision:
    tick = _Tick(spec, status.model_copy(deep=True), observations, now)
    tick.run()
    status_now = tick.status
    return Decision(status_now, tuple(tick.actions), tick.requeue, changed=status_now != status)


class _Tick:
    """One call of `step`: mutable scratch state, discarded after the decision."""

    def __init__(
        self,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
        obs: Observations,
        now: datetime,
    ) -> None:
        self.spec, self.status, self.obs, self.now = spec, status, obs, now
        self.stages: list[Stage] = spec.strategy.resolved_stages()
        self.actions: list[Action] = []
        self.interval = (
            parse_duration(spec.analysis.interval).total_seconds()
            if spec.analysis
            else DEFAULT_TICK_SECONDS
        )
        self.requeue: float = self.interval

    # -- the flow ----------------------------------------------------------------

    def run(self) -> None:
        s = self.status
        spec_changed = s.observed_generation != self.obs.generation
        s.stage_count = len(self.stages)
        s.observed_generation = self.obs.generation
        self._record_analysis()
        self._analysis_condition()
        self._record_drift()
        action = self._take_action()
        restart = self._restart_reason(action, spec_changed)
        if restart:
            self._restart(*restart)
            action = None if action == "retry" else action
        if awaiting_start(s):
            self._before_start(action)
        elif s.phase in TERMINAL_PHASES:
            self._after_end(action)
        else:
            self._in_flight(action)
        self._refresh_summaries()

    def _record_analysis(self) -> None:
        """Keep the checks' values in status, and announce each failed check and the
        start of each blind or empty spell, with its numbers."""
        s, obs = self.status, self.obs
        if obs.metrics is None:
            return
        before = {m.name: m for m in s.analysis}
        for metric in obs.metrics:
            previous = before.get(metric.name)
            failures_before = previous.consecutive_failures if previous else 0
            if metric.verdict == "fail" and metric.consecutive_failures > failures_before:
                self._event("Warning", "AnalysisFailed", metric.message or metric.name)
        errors_before = s.analysis_errors
        s.analysis = list(obs.metrics)
        s.samples = obs.samples
        s.analysis_errors = obs.analysis_errors or 0
        judgement = obs.judgement
        if errors_before == 0 and s.analysis_errors > 0 and judgement is not None:
            self._event("Warning", judgement.reason, judgement.message)

    def _analysis_condition(self) -> None:
        """AnalysisUnavailable is True while the analysis is blind, so alerts and
        `kubectl wait` can tell an outage from a bad model."""
        judgement = self.obs.judgement
        if judgement is None:
            return
        blind = judgement.verdict == "pause"
        self.status.conditions = set_condition(
            self.status.conditions,
            type="AnalysisUnavailable",
            status=blind,
            reason=judgement.reason if blind else "AnalysisAvailable",
            message=judgement.message if blind else "",
            now=self.now,
            generation=self.obs.generation,
        )

    def _record_drift(self) -> None:
        """Drift is True while the gate warns, drifts or cannot see, each announced
        once. An enforced drift is announced by its rollback instead."""
        drift = self.obs.drift
        if drift is None:
            return
        s = self.status
        s.drift = drift
        reason = _DRIFT_REASONS[drift.verdict]
        abnormal = drift.verdict in ("warn", "drift", "nodata", "invalid")
        before = condition(s.conditions, "Drift")
        changed = before is None or before.status != ("True" if abnormal else "False")
        changed = changed or (before is not None and before.reason != reason)
        announced_by_rollback = drift.enforced and drift.verdict in ("drift", "invalid")
        if abnormal and changed and not announced_by_rollback:
            observe_only = "" if drift.enforced else "observe-only, not blocking: "
            self._event("Warning", reason, observe_only + (drift.message or reason))
        s.conditions = set_condition(
            s.conditions,
            type="Drift",
            status=abnormal,
            reason=reason,
            message=drift.message or "",
            now=self.now,
            generation=self.obs.generation,
        )

    def _take_action(self) -> str | None:
        action = self.obs.action
        if action is None:
            return None
        self.actions.append(ConsumeAction(action))
        if action not in ACTIONS:
            allowed = ", ".join(sorted(ACTIONS))
            self._event("Warning", "UnknownAction", f"unknown action {action!r}; use {allowed}")
            return None
        return action

    def _restart_reason(self, action: str | None, spec_changed: bool) -> tuple[str, str] | None:
        s = self.status
        identity = rollout_identity(self.spec)
        if s.target_hash and s.target_hash != identity:
            return "SpecChanged", "targets, routing or stages changed; starting a new run"
        stopped = s.phase in ("RolledBack", "Failed") and not preflight_failed(self.status)
        if stopped and spec_changed:
            return "SpecChanged", "spec changed after the rollout stopped; starting a new run"
        if action == "retry" and s.phase in ("RolledBack", "Failed"):
            return "Retry", "retry requested; starting again from stage 1"
        return None

    def _restart(self, reason: str, message: str) -> None:
        s = self.status
        s.stage, s.weight, s.mirroring, s.preparing_weight = 0, 0, False, None
        s.target_hash, s.stage_started_at, s.finished_at = None, None, None
        s.approved_stage, s.manual_pause, s.scaled_down = 0, False, False
        s.weight_confirmed, s.effective_weight = False, None
        s.analysis, s.samples, s.drift = [], None, None
        self._set_route()
        self._transition("Pending", reason, message, "Normal")

    # -- before stage 1 ----------------------------------------------------------

    def _before_start(self, action: str | None) -> None:
        s, obs = self.status, self.obs
        problems = [f"{m} not found" for m in obs.missing] + list(obs.conflicts)
        if problems:
            reason = "TargetNotFound" if obs.missing else "ClaimConflict"
            self._fail(reason, "; ".join(problems) + "; no traffic was moved")
            self.requeue = PREFLIGHT_RECHECK_SECONDS
            return
        if obs.route is not None and obs.route.problem:
            self._fail("RoutingInvalid", f"{obs.route.problem}; no traffic was moved")
            self.requeue = PREFLIGHT_RECHECK_SECONDS
            return
        if obs.judgement is not None and obs.judgement.verdict == "invalid":
            self._fail(obs.judgement.reason, f"{obs.judgement.message}; no traffic was moved")
            return
        if obs.judgement is not None and obs.judgement.verdict == "pause":
            self._transition("Paused", obs.judgement.reason, obs.judgement.message, "Warning")
            return
        if action == "abort":
            s.finished_at = timestamp(self.now)
            message = "aborted before any traffic moved"
            self._transition("RolledBack", "Aborted", message, "Warning")
            return
        if self._held(action):
            return
        if s.target_hash is None:
            s.target_hash = rollout_identity(self.spec)
            s.rollout_generation = self.obs.generation
            s.total_replicas = self._fleet_size()
        self._advance_to(0, "Started")

    def _fleet_size(self) -> int | None:
        replicas = self.spec.traffic_routing.replicas
        if replicas is None:
            return None
        if replicas.total_replicas is not None:
            return replicas.total_replicas
        stable = self.obs.stable.replicas if self.obs.stable else 0
        return max(1, stable)

    # -- after the end -----------------------------------------------------------

    def _after_end(self, action: str | None) -> None:
        s = self.status
        if action is not None:
            message = f"{action} does nothing on a {s.phase} rollout"
            self._event("Warning", "ActionIgnored", message)
        side: StableRef | CandidateRef | None = None
        if s.phase == "Succeeded":
            side = self.spec.stable
        elif s.phase == "RolledBack":
            side = self.spec.candidate
        if side is None or side.scale_down_delay is None or s.scaled_down or not s.finished_at:
            self.requeue = max(self.interval, 60.0)
            return
        due = _parse_time(s.finished_at) + parse_duration(side.scale_down_delay)
        if self.now < due:
            self.requeue = max(FAST_TICK_SECONDS, (due - self.now).total_seconds())
            return
        s.scaled_down = True
        if not self.spec.dry_run:
            self.actions.append(Scale(side.deployment, 0))
        role = "stable" if s.phase == "Succeeded" else "candidate"
        self._event("Normal", "ScaledDown", f"scaled the {role} {side.deployment} to zero")

    # -- stages 1..n -------------------------------------------------------------

    def _in_flight(self, action: str | None) -> None:
        s, obs = self.status, self.obs
        if s.phase == "RollingBack":
            self._finish_rollback()
            return
        if obs.candidate is None:
            deployment = self.spec.candidate.deployment
            self._rollback("CandidateMissing", f"candidate Deployment {deployment} is gone")
            return
        if obs.route is not None and obs.route.problem:
            self._fail("RoutingInvalid", f"{obs.route.problem}; the routing object was not written")
            return
        if action == "abort":
            self._rollback("Aborted", "abort requested")
            return
        judgement = obs.judgement
        if judgement is not None and judgement.verdict == "invalid":
            self._fail(judgement.reason, f"{judgement.message}; the weight was left as it was")
            return
        if judgement is not None and judgement.verdict == "rollback":
            self._rollback(judgement.reason, judgement.message)
            return
        if obs.stable is None:
            message = f"stable Deployment {self.spec.stable.deployment} is gone; weight held"
            self._transition("Paused", "StableMissing", message, "Warning")
            return
        if obs.route is None:
            self._transition("Paused", "RoutingMissing", self._route_missing(), "Warning")
            return
        self._reassert_route()
        if self._held(action):
            return
        blind = judgement is not None and judgement.verdict == "pause"
        if blind and judgement and action not in ("promote", "promote-full"):
            self._transition("Paused", judgement.reason, self._where(judgement.message), "Warning")
            return
        self._judge_stage(action, judgement)

    def _route_missing(self) -> str:
        routing = self.spec.traffic_routing
        name = (
            f"HTTPRoute {routing.gateway_api.http_route}"
            if routing.gateway_api
            else f"VirtualService {routing.istio.virtual_service}"
            if routing.istio
            else "routing object"
        )
        return f"{name} is gone; weight held"

    def _reassert_route(self) -> None:
        s, route = self.status, self.obs.route
        if self.spec.dry_run or route is None:
            return
        if route.matches:
            s.weight_confirmed = True
            return
        if s.weight_confirmed:
            seen = f"{route.weight:g}%" if route.weight is not None else "something else"
            self._event(
                "Warning",
                "WeightOverridden",
                f"the routing object was changed to {seen} by someone else; restoring {s.weight}%",
            )
        s.weight_confirmed = False
        self._set_route()
        self.requeue = FAST_TICK_SECONDS

    def _held(self, action: str | None) -> bool:
        """Pause and resume, from the spec or the action annotation."""
        s = self.status
        if action == "pause":
            s.manual_pause = True
        elif action in ("resume", "promote", "promote-full"):
            s.manual_pause = False
        if self.spec.paused:
            message = self._where("paused by spec.paused")
            self._transition("Paused", "PausedBySpec", message, "Normal")
            return True
        if s.manual_pause:
            message = self._where("paused by the pause action")
            self._transition("Paused", "PausedByAction", message, "Normal")
            return True
        return False

    def _judge_stage(self, action: str | None, judgement: Judgement | None) -> None:
        s = self.status
        index = s.stage - 1
        stage = self.stages[index]
        last = len(self.stages)
        if action == "promote-full" or s.stage < s.approved_stage == last - 1:
            # every stage before the last approved, in status: a jump that waits for
            # the candidate's readiness is carried out later, not lost
            s.approved_stage = max(s.approved_stage, last - 1)
            self._advance_to(last - 1, "PromotedFull")
            return
        if action == "promote" or s.approved_stage >= s.stage:
            # recorded in status, so a promote waiting for the candidate's readiness
            # is carried out once it is ready, not lost with the consumed annotation
            s.approved_stage = s.stage
            self._advance_to(index + 1, "Promoted")
            return
        awaiting_approval = s.phase == "Paused" and self._last_reason() == "AwaitingApproval"
        if awaiting_approval and stage.approval == "Manual" and s.approved_stage < s.stage:
            return  # its checks passed; nothing is queried while it waits for a person
        waiting = self._waiting_for(stage, judgement)
        if waiting:
            message = self._where("; ".join(waiting))
            self._transition("Progressing", "StageInProgress", message, "Normal", quiet=True)
            return
        if stage.approval == "Manual" and s.approved_stage < s.stage:
            message = self._where("checks passed; waiting for the promote action")
            self._transition("Paused", "AwaitingApproval", message, "Normal")
            return
        self._advance_to(index + 1, "StageComplete")

    def _waiting_for(self, stage: Stage, judgement: Judgement | None) -> list[str]:
        s = self.status
        waiting = []
        started = _parse_time(s.stage_started_at) if s.stage_started_at else self.now
        remaining = started + parse_duration(stage.duration) - self.now
        if remaining > timedelta(0):
            waiting.append(f"{_seconds(remaining)} of {stage.duration} left")
            self.requeue = min(self.requeue, max(FAST_TICK_SECONDS, remaining.total_seconds()))
        if stage.min_samples:
            samples = judgement.samples if judgement else None
            if samples is None or samples < stage.min_samples:
                seen = "no count yet" if samples is None else f"{samples:g}"
                waiting.append(f"samples {seen} of {stage.min_samples}")
        if judgement is not None and judgement.verdict != "pass":
            waiting.append(judgement.message)
        if judgement is None and self._judged():
            # resumed from a pause in which nothing was queried: never complete a
            # stage on checks that did not run; the next tick runs them
            waiting.append("waiting for this stage's checks to run")
            self.requeue = FAST_TICK_SECONDS
        return waiting

    def _judged(self) -> bool:
        return self.spec.analysis is not None or self.spec.drift_gate is not None

    def _last_reason(self) -> str | None:
        history = self.status.history
        return history[-1].reason if history else None

    def _advance_to(self, index: int, reason: str) -> None:
        s = self.status
        if index >= len(self.stages):
            s.finished_at = timestamp(self.now)
            s.preparing_weight = None
            message = f"the candidate serves {s.weight}% after {len(self.stages)} stages"
            self._transition("Succeeded", "Succeeded", message, "Normal")
            return
        stage = self.stages[index]
        needed = self._ready_needed(stage)
        candidate = self.obs.candidate
        ready = candidate.ready if candidate else 0
        if ready < needed and not self.spec.dry_run:
            if s.total_replicas is not None and s.preparing_weight != stage.weight:
                s.preparing_weight = stage.weight
                self._set_route()
            message = (
                f"waiting for the candidate: {ready} of {needed} replicas ready "
                f"to take {stage.weight}% at stage {index + 1}"
            )
            self.requeue = min(self.requeue, 2.0)
            self._transition("Progressing", "WaitingForCandidate", message, "Normal", quiet=True)
            return
        previous = s.weight
        s.stage, s.weight, s.mirroring = index + 1, stage.weight, stage.mirror
        s.preparing_weight = None
        s.stage_started_at = timestamp(self.now)
        s.weight_confirmed = False
        if s.total_replicas is not None:
            s.effective_weight = effective_weight(s.total_replicas, stage.weight)
        else:
            s.effective_weight = float(stage.weight)
        self._set_route()
        what = "mirroring stable traffic" if stage.mirror else f"{previous}% -> {stage.weight}%"
        message = f"stage {s.stage}/{len(self.stages)} started: {what}"
        if self.spec.dry_run:
            message += " (dry run: no traffic moved)"
        self.requeue = FAST_TICK_SECONDS  # verify the write soon
        self._transition("Progressing", reason, message, "Normal", force=True)

    def _ready_needed(self, stage: Stage) -> int:
        s = self.status
        if s.total_replicas is not None:
            return max(candidate_replicas(s.total_replicas, stage.weight), 1 if stage.mirror else 0)
        reference = self.obs.stable.replicas if self.obs.stable else 1
        return ready_replicas_needed(max(reference, 1), stage.weight, stage.mirror)

    # -- rollback ----------------------------------------------------------------

    def _rollback(self, reason: str, message: str) -> None:
        s = self.status
        s.weight, s.mirroring, s.preparing_weight = 0, False, None
        s.effective_weight = 0.0
        s.weight_confirmed = False
        self._set_route()
        self.requeue = FAST_TICK_SECONDS
        message = f"rolling back at stage {s.stage}: {message}"
        self._transition("RollingBack", reason, message, "Warning")

    def _finish_rollback(self) -> None:
        s, route = self.status, self.obs.route
        if self.spec.dry_run or route is None or route.matches:
            s.finished_at = timestamp(self.now)
            s.weight_confirmed = route is not None
            message = "the stable serves all traffic again"
            self._transition("RolledBack", "RolledBack", message, "Warning")
            return
        self._set_route()
        self.requeue = FAST_TICK_SECONDS

    # -- helpers -----------------------------------------------------------------

    def _fail(self, reason: str, message: str) -> None:
        self._transition("Failed", reason, message, "Warning")

    def _where(self, message: str) -> str:
        s = self.status
        return f"stage {s.stage}/{len(self.stages)} at {s.weight}%: {message}"

    def _set_route(self) -> None:
        if not self.spec.dry_run:
            self.actions.append(SetRoute(route_target(self.status)))

    def _event(self, type: EventType, reason: str, message: str) -> None:
        self.actions.append(EmitEvent(type, reason, message))

    def _transition(
        self,
        phase: Phase,
        reason: str,
        message: str,
        event_type: EventType,
        *,
        quiet: bool = False,
        force: bool = False,
    ) -> None:
        """Enter a phase. A change of phase or reason (or `force`) is a transition: a
        history entry and an Event. `quiet` updates a progress message in place."""
        s = self.status
        last_reason = s.history[-1].reason if s.history else None
        transition = force or s.phase != phase or last_reason != reason
        changed = s.phase != phase if quiet else transition
        if changed:
            entry = HistoryEntry(
                time=timestamp(self.now),
                from_phase=s.phase,
                to_phase=phase,
                stage=s.stage,
                weight=s.weight,
                reason=reason,
                message=message,
            )
            s.history = [*s.history, entry][-HISTORY_LIMIT:]
            self._event(event_type, reason, message)
        s.phase, s.message = phase, message
        s.conditions = kstatus_conditions(
            s.conditions,
            phase=phase,
            reason=reason,
            message=message,
            now=self.now,
            generation=self.obs.generation,
        )

    def _refresh_summaries(self) -> None:
        s = self.status
        s.stage_summary = f"{s.stage}/{len(self.stages)}"
        summary = f"{s.weight}%"
        if s.effective_weight is not None and s.effective_weight != s.weight:
            summary += f" (~{s.effective_weight:g}%)"
        if s.mirroring:
            summary += " +mirror"
        s.weight_summary = summary


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _seconds(delta: timedelta) -> str:
    total = int(delta.total_seconds() + 0.999)
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"
