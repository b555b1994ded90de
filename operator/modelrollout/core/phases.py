"""Questions about where a rollout stands, asked by the machine and the controller.

Each is a pure function of spec and status, so the controller never re-derives the
machine's rules from raw fields: it asks here whether a rollout needs its daemon,
whether its analysis is due, and what deleting it must give back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelrollout.api.resource import ACTION_ANNOTATION
from modelrollout.api.spec import CandidateRef, ModelRolloutSpec, StableRef
from modelrollout.api.status import TERMINAL_PHASES, ModelRolloutStatus
from modelrollout.core.conditions import STALLED, condition
from modelrollout.core.types import RouteTarget

# Stalled reasons a later tick re-checks: nothing has moved yet, and the fix
# (creating a Deployment, finishing the other rollout) needs no change to this one.
PREFLIGHT_REASONS = frozenset({"TargetNotFound", "ClaimConflict", "RoutingInvalid"})
# Pauses that the analysis itself caused, and may lift when it sees again.
ANALYSIS_PAUSES = frozenset({"AnalysisUnavailable", "NoDataPolicy", "ReferenceNotFound"})


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


def last_reason(status: ModelRolloutStatus) -> str | None:
    return status.history[-1].reason if status.history else None


def analysis_due(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """Queries run only while a stage is judged, or while blind to notice it sees
    again: never before stage 1 (preflight does that), nor while paused by a person
    or waiting for one."""
    if spec.analysis is None or status.stage == 0 or spec.paused or status.manual_pause:
        return False
    if status.phase == "Progressing":
        return True
    return status.phase == "Paused" and last_reason(status) in ANALYSIS_PAUSES


def scale_down_side(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> StableRef | CandidateRef | None:
    """The side a finished rollout still has to scale to zero: the stable after a
    promotion, the candidate after a rollback, when it asks for it and it is not done."""
    side: StableRef | CandidateRef | None = None
    if status.phase == "Succeeded":
        side = spec.stable
    elif status.phase == "RolledBack":
        side = spec.candidate
    if side is None or side.scale_down_delay is None or status.scaled_down:
        return None
    return side


def ended(status: ModelRolloutStatus) -> bool:
    """Whether this status is the rollout's last: no later pass will come to record
    what happens after it (the deliveries of its final notifications, say)."""
    return status.phase in TERMINAL_PHASES and not preflight_failed(status)


def needs_driving(rollout: Mapping[str, Any]) -> bool:
    """Whether a stored rollout needs its daemon (and so kopf's finalizer).

    A finished rollout with nothing left to do has neither, so uninstalling the
    operator never leaves finished rollouts undeletable. A spec change or an action
    annotation brings the daemon back; so does anything unreadable, which only a
    daemon can report.
    """
    metadata = rollout.get("metadata") or {}
    try:
        status = ModelRolloutStatus.model_validate(dict(rollout.get("status") or {}))
    except ValidationError:
        return True
    if status.phase not in TERMINAL_PHASES or preflight_failed(status):
        return True
    if (metadata.get("annotations") or {}).get(ACTION_ANNOTATION):
        return True
    if status.observed_generation != metadata.get("generation"):
        return True
    try:
        spec = ModelRolloutSpec.model_validate(dict(rollout.get("spec") or {}))
    except ValidationError:
        return True
    return scale_down_side(spec, status) is not None


def release_target(status: ModelRolloutStatus) -> RouteTarget | None:
    """What deleting a rollout gives back: all traffic to the stable, if any moved."""
    if status.phase in TERMINAL_PHASES or status.stage == 0:
        return None
    return RouteTarget(0, False, 0, status.total_replicas)
