"""Gate checks: evaluation Jobs and webhooks before the first traffic, before the
last stage and after it.

All of a gate's checks run at once. Each attempt is recorded in status (`Running`,
then `Succeeded` or `Failed`), so a restarted operator picks up the Job it started
instead of starting another; a failed attempt is retried up to `retries` times; an
attempt that outlives its `timeout` fails. A gate passes when every check succeeded
and fails as soon as one has failed for good: a check that cannot decide never passes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelrollout.api.durations import parse_duration
from modelrollout.api.spec import Check, Checks
from modelrollout.api.status import CheckPoint, CheckStatus, KpiStatus, ModelRolloutStatus
from modelrollout.core.conditions import timestamp
from modelrollout.core.types import CheckAttempt, CheckObservation, RunCheck, StopCheck

GateVerdict = Literal["pass", "wait", "fail"]
MESSAGE_CHARS = 1024


@dataclass
class Gate:
    """One gate's outcome this tick: its verdict, the check statuses to store, the
    attempts to start or stop, and Events (type, reason, message) to post."""

    verdict: GateVerdict
    message: str
    checks: list[CheckStatus]
    starts: list[RunCheck] = field(default_factory=list)
    stops: list[StopCheck] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)


POINTS: tuple[CheckPoint, ...] = ("preRollout", "prePromotion", "postPromotion")


def checks_at(checks: Checks | None, point: CheckPoint) -> list[Check]:
    if checks is None:
        return []
    return {
        "preRollout": checks.pre_rollout,
        "prePromotion": checks.pre_promotion,
        "postPromotion": checks.post_promotion,
    }[point]


def job_name(rollout: str, point: CheckPoint, check: str, attempt: int, started: datetime) -> str:
    """A deterministic DNS label per attempt, so a restarted operator finds its Job.
    It ends with the attempt's start time (epoch seconds, base 36, as status stores
    it): a later run's attempt 1 gets a Job of its own, never the finished Job of an
    earlier run, whose pod template cannot be changed anyway."""
    short = {"preRollout": "pre", "prePromotion": "promote", "postPromotion": "post"}[point]
    stamp = _base36(int(started.timestamp()))
    name = f"{rollout.replace('.', '-')}-{short}-{check}-{attempt}-{stamp}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if number == 0:
            return digits


def advance(
    point: CheckPoint,
    checks: Sequence[Check],
    stored: Sequence[CheckStatus],
    seen: Mapping[tuple[CheckPoint, str], CheckObservation],
    now: datetime,
) -> Gate:
    """Move every check of a gate on by what was seen this tick."""
    by_name = {c.name: c for c in stored if c.point == point}
    gate = Gate("wait", "", [c for c in stored if c.point != point])
    for check in checks:
        entry = by_name.get(check.name)
        if entry is None:
            entry = _start(gate, point, check, 1, now)
        elif entry.phase == "Running":
            entry = _progress(gate, point, check, entry, seen.get((point, check.name)), now)
        gate.checks.append(entry)
    mine = [c for c in gate.checks if c.point == point]
    failed = [c for c in mine if c.phase == "Failed"]
    running = [c for c in mine if c.phase == "Running"]
    if failed:
        gate.verdict = "fail"
        gate.message = "; ".join(f"{point} check {c.name} failed: {c.message}" for c in failed)
        _stop_the_rest(gate, point, checks, now)
    elif running:
        listed = ", ".join(f"{c.name} (attempt {c.attempt})" for c in running)
        gate.message = f"waiting for {point} checks: {listed}"
    else:
        gate.verdict = "pass"
        gate.message = f"{point} checks passed: {', '.join(c.name for c in mine)}"
    return gate


def _stop_the_rest(gate: Gate, point: CheckPoint, checks: Sequence[Check], now: datetime) -> None:
    """The gate failed for good: its checks still running are stopped and end as
    Failed, so nothing keeps running (or calling) for a gate already decided."""
    by_name = {c.name: c for c in checks}
    for index, entry in enumerate(gate.checks):
        if entry.point != point or entry.phase != "Running" or entry.name not in by_name:
            continue
        run = CheckAttempt(point, by_name[entry.name], entry.attempt, entry.started_at)
        gate.stops.append(StopCheck(run))
        message = "stopped: another check of this gate failed"
        gate.checks[index] = entry.model_copy(
            update={"phase": "Failed", "finished_at": timestamp(now), "message": message}
        )
        what = f"{point} check {entry.name} (attempt {entry.attempt})"
        gate.events.append(("Normal", "CheckStopped", f"{what} {message}"))


def _start(gate: Gate, point: CheckPoint, check: Check, attempt: int, now: datetime) -> CheckStatus:
    gate.starts.append(RunCheck(CheckAttempt(point, check, attempt, timestamp(now))))
    kind = "Job" if check.job is not None else "webhook"
    message = f"{point} check {check.name} started ({kind}, attempt {attempt})"
    gate.events.append(("Normal", "CheckStarted", message))
    return CheckStatus(
        point=point, name=check.name, phase="Running", attempt=attempt, started_at=timestamp(now)
    )


def _progress(
    gate: Gate,
    point: CheckPoint,
    check: Check,
    entry: CheckStatus,
    seen: CheckObservation | None,
    now: datetime,
) -> CheckStatus:
    if seen is not None and seen.attempt != entry.attempt:
        seen = None  # a stale attempt's result
    job = seen.job if seen and seen.job else entry.job
    entry = entry.model_copy(update={"job": job})
    outcome: tuple[bool, str, list[KpiStatus]] | None = None
    if seen is not None and seen.state == "succeeded":
        outcome = _judge_kpis(check, seen)
    elif seen is not None and seen.state == "failed":
        outcome = (False, seen.message or "failed", [])
    elif seen is not None and now - entry.started_at >= parse_duration(check.timeout):
        # only an attempt seen running this tick times out: the first pass after a
        # pause has read nothing yet, and a Job that finished meanwhile is not late
        gate.stops.append(StopCheck(CheckAttempt(point, check, entry.attempt, entry.started_at)))
        outcome = (False, f"timed out after {check.timeout}", [])
    if outcome is None:
        return entry
    passed, message, kpis = outcome
    if seen is not None and seen.logs and not passed:
        message = f"{message}; logs: {seen.logs}"
    message = message[:MESSAGE_CHARS]
    finished = entry.model_copy(
        update={
            "phase": "Succeeded" if passed else "Failed",
            "finished_at": timestamp(now),
            "message": message,
            "kpis": kpis,
        }
    )
    what = f"{point} check {check.name} (attempt {entry.attempt})"
    if passed:
        gate.events.append(("Normal", "CheckPassed", f"{what} passed: {message}"))
        return finished
    if entry.attempt <= check.retries:
        gate.events.append(("Warning", "CheckRetried", f"{what} failed: {message}; retrying"))
        return _start(gate, point, check, entry.attempt + 1, now)
    gate.events.append(("Warning", "CheckFailed", f"{what} failed: {message}"))
    return finished


def _judge_kpis(check: Check, seen: CheckObservation) -> tuple[bool, str, list[KpiStatus]]:
    """Each declared KPI must be reported, be a finite number and be within bounds."""
    if check.job is None or not check.job.kpis:
        return True, seen.message or "succeeded", []
    reported = seen.kpis or {}
    statuses, problems, shown = [], [], []
    for kpi in check.job.kpis:
        value = _number(reported.get(kpi.name))
        verdict: Literal["pass", "fail"] = "pass"
        if value is None:
            verdict = "fail"
            problems.append(f"KPI {kpi.name} not reported as a number")
        elif kpi.min is not None and value < kpi.min:
            verdict = "fail"
            problems.append(f"{kpi.name} {value:g} < min {kpi.min:g}")
        elif kpi.max is not None and value > kpi.max:
            verdict = "fail"
            problems.append(f"{kpi.name} {value:g} > max {kpi.max:g}")
        else:
            shown.append(f"{kpi.name} {value:g}")
        statuses.append(KpiStatus(name=kpi.name, value=value, verdict=verdict))
    if seen.kpis is None:
        return False, "the Job succeeded but wrote no KPIs to its termination message", statuses
    if problems:
        return False, "; ".join(problems), statuses
    return True, "KPIs within bounds: " + ", ".join(shown), statuses


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


GATED_PHASES = ("Pending", "Progressing")  # the phases in which the machine runs gates


def running(status: ModelRolloutStatus) -> list[CheckStatus]:
    """The attempts whose outcome the adapters must look at this tick: none unless
    the rollout is where a gate can judge them, so a paused or finished rollout
    calls no webhook and (re)creates no Job."""
    if status.phase not in GATED_PHASES:
        return []
    return [c for c in status.checks if c.phase == "Running"]


AttemptState = Literal["running", "succeeded", "failed"]


def job_state(job: Mapping[str, Any]) -> tuple[AttemptState, str]:
    """A Job's outcome from its conditions: Failed or Complete, else still running."""
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    failed, complete = conditions.get("Failed"), conditions.get("Complete")
    if failed is not None and failed.get("status") == "True":
        return "failed", f"{failed.get('reason')}: {failed.get('message')}"
    if complete is not None and complete.get("status") == "True":
        return "succeeded", "succeeded"
    return "running", ""


def kpis_of(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, object] | None:
    """The JSON object a succeeded pod of the Job wrote to a termination message."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Succeeded":
            continue
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            found = _json_object(terminated.get("message"))
            if found is not None:
                return found
    return None


def _json_object(message: str | None) -> Mapping[str, object] | None:
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
