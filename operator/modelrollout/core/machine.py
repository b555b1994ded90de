"""The rollout state machine: `step(spec, status, observations, now)`.

It returns the next status and the actions to take; the controller persists the
status first and then performs the actions. The status is the only memory, and
every action is idempotent (a route target, a replica count), so an operator
killed at any moment calls `step` again and carries on where the last one stopped:
no stage repeated or skipped, no weight moved backwards, no transition announced
twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from modelrollout.api.durations import parse_duration
from modelrollout.api.spec import ModelRolloutSpec, NotificationEvent, Stage
from modelrollout.api.status import (
    HISTORY_LIMIT,
    TERMINAL_PHASES,
    CheckPoint,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
)
from modelrollout.core.checks import advance, checks_at
from modelrollout.core.conditions import condition, kstatus_conditions, set_condition, timestamp
from modelrollout.core.phases import (
    awaiting_start,
    last_reason,
    preflight_failed,
    scale_down_side,
)
from modelrollout.core.stages import (
    candidate_replicas,
    effective_weight,
    ready_replicas_needed,
    rollout_identity,
)
from modelrollout.core.targets import routing_object
from modelrollout.core.types import (
    Action,
    ConsumeAction,
    Decision,
    EmitEvent,
    EventType,
    Judgement,
    Notify,
    Observations,
    RouteTarget,
    Scale,
    SetRoute,
)

ACTIONS = frozenset({"promote", "promote-full", "abort", "retry", "pause", "resume"})
PREFLIGHT_RECHECK_SECONDS = 10.0
INVALID_SPEC_RECHECK_SECONDS = 60.0
DEFAULT_TICK_SECONDS = 10.0
FAST_TICK_SECONDS = 1.0
# Replicas router, rollback: how long the candidate keeps its replicas while the
# stable grows back, before it is scaled down anyway (and says so).
SURGE_WAIT_SECONDS = 60.0
CHECK_POLL_SECONDS = 5.0

# Which transitions are told to receivers: (phase, reason), or (phase, None) for any.
_NOTICES: dict[tuple[str, str | None], NotificationEvent] = {
    ("Progressing", "Started"): "Started",
    ("Progressing", "StageComplete"): "StageAdvanced",
    ("Progressing", "Promoted"): "StageAdvanced",
    ("Progressing", "PromotedFull"): "StageAdvanced",
    ("Paused", "AwaitingApproval"): "AwaitingApproval",
    ("Paused", None): "Paused",
    ("RolledBack", None): "RolledBack",
    ("Succeeded", None): "Succeeded",
    ("Failed", None): "Failed",
}

_DRIFT_REASONS = {
    "stable": "NoDrift",
    "warn": "DriftWarning",
    "drift": "DriftDetected",
    "inconclusive": "DriftInconclusive",
    "nodata": "DriftNoData",
    "invalid": "DriftBinsMismatch",
}


def route_target(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> RouteTarget:
    """What the router must make true for this status. A dry run serves the candidate
    nothing: where the router can mirror, it mirrors the stage's share instead. A mirror
    stage judged by a match rate leaves the copying to the shadow comparator (which
    follows status.mirroring): a data-plane mirror as well would copy every request
    twice into the candidate's metrics."""
    floor = max(status.weight, status.preparing_weight or 0)
    if spec.dry_run:
        share = status.weight or (100 if status.mirroring else 0)
        share = 0 if status.phase in TERMINAL_PHASES else share
        return RouteTarget(0, share > 0, 0, status.total_replicas, mirror_percent=share or 100)
    stages = spec.strategy.resolved_stages()
    compared = 0 < status.stage <= len(stages) and stages[status.stage - 1].match_rate is not None
    mirror = status.mirroring and not compared
    return RouteTarget(status.weight, mirror, floor, status.total_replicas)


def step(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    observations: Observations,
    now: datetime,
) -> Decision:
    """Decide one tick: from the stored status and what the adapters saw at `now`,
    the next status and the actions that make it true.

    Start here to follow a rollout: `_Tick.run` reads top to bottom as before the
    start (`_before_start`), in flight (`_in_flight`, then `_judge_stage`) and after
    the end (`_after_end`). Nothing here reads the clock or does I/O, so a test can
    replay any history, and a restarted operator gets the same answer again.
    """
    tick = _Tick(spec, status.model_copy(deep=True), observations, now)
    tick.run()
    return tick.decision(status)


def reject_spec(
    status: ModelRolloutStatus, generation: int, message: str, now: datetime
) -> Decision:
    """A spec the API server admitted but the operator cannot read (an older CRD,
    say): Failed with InvalidSpec, a history entry and an Event, nothing moved."""
    tick = _Tick(None, status.model_copy(deep=True), Observations(generation), now)
    tick.status.observed_generation = generation
    tick._fail("InvalidSpec", f"invalid spec: {message}; no traffic was moved")
    tick.requeue = INVALID_SPEC_RECHECK_SECONDS
    return tick.decision(status)


class _Tick:
    """One call of `step`: mutable scratch state, discarded after the decision."""

    def __init__(
        self,
        spec: ModelRolloutSpec | None,
        status: ModelRolloutStatus,
        obs: Observations,
        now: datetime,
    ) -> None:
        self._spec, self.status, self.obs, self.now = spec, status, obs, now
        self.stages: list[Stage] = spec.strategy.resolved_stages() if spec else []
        self.actions: list[Action] = []
        self.interval = (
            parse_duration(spec.analysis.interval).total_seconds()
            if spec and spec.analysis
            else DEFAULT_TICK_SECONDS
        )
        self.requeue: float = self.interval
        self.rollback: str | None = None
        self.notices: list[Notify] = []

    @property
    def spec(self) -> ModelRolloutSpec:
        assert self._spec is not None, "a tick without a spec only fails"
        return self._spec

    def decision(self, before: ModelRolloutStatus) -> Decision:
        changed = self.status != before
        return Decision(
            self.status, tuple(self.actions), self.requeue, changed, self.rollback,
            tuple(self.notices),
        )  # fmt: skip

    # -- the flow ----------------------------------------------------------------

    def run(self) -> None:
        s = self.status
        spec_changed = s.observed_generation != self.obs.generation
        s.stage_count = len(self.stages)
        s.observed_generation = self.obs.generation
        self._record_analysis()
        self._analysis_condition()
        self._record_drift()
        if self.obs.notifications is not None:
            s.notifications = list(self.obs.notifications)
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
        s.analysis, s.samples, s.drift, s.checks = [], None, None, []
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
        if self._gate("preRollout", "Pending"):
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
        side = scale_down_side(self.spec, s)
        if side is None or side.scale_down_delay is None or not s.finished_at:
            self.requeue = max(self.interval, 60.0)
            return
        due = s.finished_at + parse_duration(side.scale_down_delay)
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
        route = routing_object(self.spec.traffic_routing)
        return f"{route.ref if route else 'routing object'} is gone; weight held"

    def _routes(self) -> bool:
        """Whether this rollout writes its router: a dry run only where it can mirror."""
        return not self.spec.dry_run or self.spec.traffic_routing.can_mirror

    def _reassert_route(self) -> None:
        s, route = self.status, self.obs.route
        if not self._routes() or route is None:
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
        awaiting_approval = s.phase == "Paused" and last_reason(s) == "AwaitingApproval"
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
        started = s.stage_started_at or self.now
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

    def _advance_to(self, index: int, reason: str) -> None:
        s = self.status
        last = len(self.stages) - 1
        if index == last and not self._gate("prePromotion", "Progressing"):
            return
        if index > last and not self._gate("postPromotion", "Progressing"):
            return
        if index > last:
            s.finished_at = timestamp(self.now)
            s.preparing_weight = None
            message = f"the candidate serves {s.weight}% after {len(self.stages)} stages"
            if self.spec.dry_run:
                message = f"dry run: the candidate passed {len(self.stages)} stages, served none"
            self._transition("Succeeded", "Succeeded", message, "Normal")
            if self.spec.dry_run:
                self._set_route()  # the mirror stops
            return
        stage = self.stages[index]
        needed = self._ready_needed(stage)
        candidate = self.obs.candidate
        ready = candidate.ready if candidate else 0
        if ready < needed and self._routes():
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
        if self.spec.dry_run and self._routes():
            message += (
                f" (dry run: the candidate gets a mirrored {stage.weight or 100}%, answers none)"
            )
        elif self.spec.dry_run:
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
        """Weight to 0 in one write. The replicas router grows the stable back first
        and keeps the candidate's replicas (`preparing_weight`) until the stable is
        ready, so capacity never dips; `_finish_rollback` then scales the candidate."""
        s = self.status
        surge = self._routes() and s.total_replicas is not None and s.weight > 0
        s.preparing_weight = max(s.weight, s.preparing_weight or 0) if surge else None
        s.weight, s.mirroring = 0, False
        s.effective_weight = 0.0
        s.weight_confirmed = False
        self._set_route()
        self.requeue = FAST_TICK_SECONDS
        self.rollback = reason
        message = f"rolling back at stage {s.stage}: {message}"
        self._transition("RollingBack", reason, message, "Warning")

    def _finish_rollback(self) -> None:
        s, route = self.status, self.obs.route
        if self._routes() and route is not None and not route.matches:
            self._set_route()
            self.requeue = FAST_TICK_SECONDS
            return
        if s.preparing_weight and route is not None and self._stable_regrown():
            s.preparing_weight = None  # the stable is back: now the candidate shrinks
            self._set_route()
            self.requeue = FAST_TICK_SECONDS
            return
        if s.preparing_weight and route is not None:
            self.requeue = 2.0
            return
        s.finished_at = timestamp(self.now)
        s.weight_confirmed = route is not None
        message = "the stable serves all traffic again"
        self._transition("RolledBack", "RolledBack", message, "Warning")

    def _gate(self, point: CheckPoint, phase: Phase) -> bool:
        """Whether a gate's checks let the rollout on: True once they all passed (or
        there are none); False while they run, or when one failed, which fails the
        rollout before any traffic, rolls it back before the last stage, and after
        the last is reported or rolls back as postPromotionFailure says."""
        s = self.status
        checks = checks_at(self.spec.checks, point)
        if not checks:
            return True
        seen = {(c.point, c.name): c for c in self.obs.checks}
        gate = advance(point, checks, s.checks, seen, self.now)
        s.checks = gate.checks
        self.actions.extend([*gate.starts, *gate.stops])
        if gate.starts:
            self.requeue = FAST_TICK_SECONDS  # a webhook is called on the next pass
        for type, reason, message in gate.events:
            self._event("Warning" if type == "Warning" else "Normal", reason, message)
        if gate.verdict == "pass":
            return True
        if gate.verdict == "wait":
            self.requeue = min(self.requeue, CHECK_POLL_SECONDS)
            self._transition(
                phase, "ChecksRunning", self._where(gate.message), "Normal", quiet=True
            )
            return False
        if (
            point == "postPromotion"
            and self.spec.checks
            and (self.spec.checks.post_promotion_failure == "Report")
        ):
            self._event("Warning", "PostPromotionCheckFailed", gate.message)
            return True
        if s.stage == 0:
            self._fail("CheckFailed", f"{gate.message}; no traffic was moved")
        else:
            self._rollback("CheckFailed", gate.message)
        return False

    def _stable_regrown(self) -> bool:
        """The stable's replicas are ready for the whole fleet, or have had
        SURGE_WAIT_SECONDS to become so (then the candidate shrinks anyway, said)."""
        s, stable = self.status, self.obs.stable
        ready = stable.ready if stable else 0
        if ready >= (s.total_replicas or 0):
            return True
        began = s.history[-1].time if s.history else self.now
        if (self.now - began).total_seconds() < SURGE_WAIT_SECONDS:
            return False
        message = (
            f"the stable has {ready} of {s.total_replicas} replicas ready after "
            f"{SURGE_WAIT_SECONDS:g}s; scaling the candidate down anyway"
        )
        self._event("Warning", "StableNotReady", message)
        return True

    # -- helpers -----------------------------------------------------------------

    def _fail(self, reason: str, message: str) -> None:
        self._transition("Failed", reason, message, "Warning")

    def _where(self, message: str) -> str:
        s = self.status
        return f"stage {s.stage}/{len(self.stages)} at {s.weight}%: {message}"

    def _set_route(self) -> None:
        if self._routes():
            self.actions.append(SetRoute(route_target(self.spec, self.status)))

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
            s.transitions += 1
            notice = _NOTICES.get((phase, reason), _NOTICES.get((phase, None)))
            if notice is not None:
                details = self._notice_details(notice)
                self.notices.append(Notify(notice, s.transitions, reason, message, details))
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

    def _notice_details(self, event: NotificationEvent) -> tuple[tuple[str, str], ...]:
        """RolledBack names why: the rollback's cause, and the check that breached."""
        if event != "RolledBack":
            return ()
        began = [h for h in self.status.history if h.to_phase == "RollingBack"]
        cause = (("cause", f"{began[-1].reason}: {began[-1].message}"),) if began else ()
        worst = [m for m in self.status.analysis if m.verdict in ("abort", "fail")]
        if not worst:
            return cause
        check = worst[0]
        bounds = check.abort if check.verdict == "abort" else check.slo
        bound = ", ".join(
            f"{side} {value:g}"
            for side, value in (("min", bounds.min if bounds else None),
                                ("max", bounds.max if bounds else None))
            if value is not None
        )  # fmt: skip
        value = "" if check.value is None else f"{check.value:g}"
        return (*cause, ("metric", check.name), ("value", value), ("bound", bound))

    def _refresh_summaries(self) -> None:
        s = self.status
        s.stage_summary = f"{s.stage}/{len(self.stages)}"
        summary = f"{s.weight}%"
        if s.effective_weight is not None and s.effective_weight != s.weight:
            summary += f" (~{s.effective_weight:g}%)"
        if s.mirroring:
            summary += " +mirror"
        if self.spec.dry_run and s.phase not in TERMINAL_PHASES:
            summary += " dry run"
        s.weight_summary = summary[:32]


def _seconds(delta: timedelta) -> str:
    total = int(delta.total_seconds() + 0.999)
    return f"{total // 60}m{total % 60:02d}s" if total >= 60 else f"{total}s"
