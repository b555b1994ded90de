"""kstatus conditions (Ready, Reconciling, Stalled) derived from the phase.

Flux, Argo CD and `kubectl wait` read these; deriving all three from one place
keeps them from contradicting each other.
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.api.status import Condition, Phase

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
_IN_PROGRESS: frozenset[str] = frozenset({"Pending", "Progressing", "Paused", "RollingBack"})


def timestamp(now: datetime) -> datetime:
    """`now` to the second, as status stores it: what is compared is what is stored."""
    return now.replace(microsecond=0)


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Replace one condition, keeping its transition time when its status holds."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type), None)
    since = previous.last_transition_time if previous and previous.status == value else None
    updated = Condition(
        type=type,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since or timestamp(now),
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type] + [updated]


def kstatus_conditions(
    conditions: list[Condition],
    *,
    phase: Phase,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[Condition]:
    """Ready at Succeeded; Reconciling while in progress; Stalled when it needs a person.

    A condition that holds carries the transition's reason; one that does not names
    the phase. Ready always carries the message, since `kubectl wait` shows it.
    """
    for type, holds in (
        (READY, phase == "Succeeded"),
        (RECONCILING, phase in _IN_PROGRESS),
        (STALLED, phase in ("RolledBack", "Failed")),
    ):
        conditions = set_condition(
            conditions,
            type=type,
            status=holds,
            reason=reason if holds else phase,
            message=message if holds or type == READY else "",
            now=now,
            generation=generation,
        )
    return conditions


def condition(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
