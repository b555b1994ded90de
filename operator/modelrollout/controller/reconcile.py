"""One reconcile pass: observe, call the pure `step`, persist, act.

Order matters for restart safety. A consumed action annotation is removed first
(a crash then loses the action rather than applying it twice); the status is
written next; only then do routers and Events act. A crash after the status write
is repaired by the next pass, which sees the route differ from the status and
re-applies it, and never posts an Event twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from modelrollout import telemetry
from modelrollout.api.resource import ACTION_ANNOTATION
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import TERMINAL_PHASES, ModelRolloutStatus
from modelrollout.controller import analysis
from modelrollout.controller.analysis import MetricsSources, TickAnalysis, analysis_due
from modelrollout.core.conditions import kstatus_conditions
from modelrollout.core.machine import (
    ConsumeAction,
    Decision,
    EmitEvent,
    Judgement,
    Observations,
    RouteTarget,
    Scale,
    SetRoute,
    Workload,
    awaiting_start,
    route_target,
    step,
)
from modelrollout.core.targets import Claimant, ObjectRef, claim_conflicts, claimed_objects
from modelrollout.kube.apply import apply_deployment_replicas, read_deployment
from modelrollout.kube.client import Kube, is_conflict, is_not_found
from modelrollout.kube.status import read_rollout, remove_annotation, write_status
from modelrollout.ports import Manifest, Snapshot
from modelrollout.routers import router_for
from modelrollout.routers.weights import RouteProblem

Logger = logging.Logger | logging.LoggerAdapter[Any]
ClaimsIndex = Mapping[tuple[str, str, str], Any]

CONFLICT_RETRY_SECONDS = 1.0
INVALID_SPEC_RECHECK_SECONDS = 60.0


def claimant_of(name: str, meta: Mapping[str, Any], status: Mapping[str, Any]) -> Claimant:
    return Claimant(
        not_started=int(status.get("stage") or 0) == 0,
        created=str(meta.get("creationTimestamp", "")),
        name=name,
    )


def workload(deployment: Manifest | None) -> Workload | None:
    if deployment is None:
        return None
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    return Workload(
        replicas=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        available=int(status.get("availableReplicas", 0)),
    )


async def reconcile(
    kube: Kube, sources: MetricsSources, body: kopf.Body, claims: ClaimsIndex, logger: Logger
) -> float:
    """Run one pass over a rollout; return the seconds until the next one is due.

    The pass reads the rollout afresh instead of trusting kopf's `body`: the watch
    event of our own last write may not have arrived yet, and a pass on the status
    before that write would undo it (restore the weight a rollback just removed)."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    rollout = await _read_own(kube, namespace, name, str(body.metadata.uid))
    if rollout is None:
        return CONFLICT_RETRY_SECONDS  # deleted or replaced: kopf stops this daemon
    metadata: dict[str, Any] = rollout["metadata"]
    generation = int(metadata.get("generation", 0))
    raw_status: dict[str, Any] = dict(rollout.get("status") or {})
    status = ModelRolloutStatus.model_validate(raw_status)
    now = datetime.now(UTC)
    spec: ModelRolloutSpec | None = None
    checks = None
    try:
        spec = ModelRolloutSpec.model_validate(rollout.get("spec") or {})
    except ValidationError as error:
        decision = _invalid_spec(status, generation, error, now)
    else:
        observations = await _observe(
            kube, sources, namespace, rollout, spec, status, claims, generation, now
        )
        decision = step(spec, status, observations, now)
        checks = observations.metrics

    try:
        await _persist(kube, namespace, name, rollout, raw_status, decision)
    except Exception as error:
        if is_conflict(error):
            logger.info("the rollout changed while reconciling; retrying with the new version")
            return CONFLICT_RETRY_SECONDS
        raise
    after = decision.status
    started_rollback = after.phase == "RollingBack" and status.phase != "RollingBack"
    reason = after.history[-1].reason if started_rollback and after.history else None
    telemetry.record_pass(namespace, name, checks, reason)
    if spec is not None:
        await _act(kube, namespace, body, spec, decision, logger)
    return decision.requeue_after or INVALID_SPEC_RECHECK_SECONDS


async def _read_own(kube: Kube, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
    """The stored rollout, or None once it is gone or a new object took its name."""
    try:
        rollout = await read_rollout(kube, namespace, name)
    except Exception as error:
        if is_not_found(error):
            return None
        raise
    return rollout if rollout["metadata"].get("uid") == uid else None


async def _persist(
    kube: Kube,
    namespace: str,
    name: str,
    rollout: Mapping[str, Any],
    raw_status: dict[str, Any],
    decision: Decision,
) -> None:
    """Consume the action annotation, then write the status, each guarded by the
    resourceVersion. A conflict caused by metadata alone (kopf adding its finalizer,
    say) is retried on the fresh version: the spec and status the decision came from
    are unchanged. Anything else is not: the pass is recomputed from the new version."""
    metadata = rollout["metadata"]
    version = str(metadata.get("resourceVersion"))
    consume = next((a.name for a in decision.actions if isinstance(a, ConsumeAction)), None)
    for attempt in range(3):
        try:
            if consume is not None:
                version = await remove_annotation(kube, namespace, name, version, ACTION_ANNOTATION)
                consume = None
            if decision.changed:
                new_status = decision.status.to_wire()
                await write_status(kube, namespace, name, version, raw_status, new_status)
            return
        except Exception as error:
            if not is_conflict(error) or attempt == 2:
                raise
            current = await read_rollout(kube, namespace, name)
            annotations = current["metadata"].get("annotations") or {}
            unchanged = (
                current["metadata"].get("generation") == metadata.get("generation")
                and (current.get("status") or {}) == raw_status
            )
            if not unchanged or (consume and annotations.get(ACTION_ANNOTATION) != consume):
                raise
            version = str(current["metadata"]["resourceVersion"])


async def _observe(
    kube: Kube,
    sources: MetricsSources,
    namespace: str,
    rollout: Mapping[str, Any],
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    claims: ClaimsIndex,
    generation: int,
    now: datetime,
) -> Observations:
    stable, candidate = await asyncio.gather(
        read_deployment(kube, namespace, spec.stable.deployment),
        read_deployment(kube, namespace, spec.candidate.deployment),
    )
    snapshot = Snapshot(stable, candidate)
    router = router_for(spec, kube, namespace)
    route = await router.observe(route_target(status), snapshot)
    missing: list[str] = []
    conflicts: list[str] = []
    tick: TickAnalysis | None = None
    judgement: Judgement | None = None
    if analysis_due(spec, status):
        tick = await analysis.observe(spec, status, namespace, sources, now)
        judgement = tick.judgement
    if awaiting_start(status):
        judgement = await analysis.preflight(spec, namespace, sources)
        missing = await _missing_before_start(kube, namespace, spec, snapshot, route is None)
        metadata = rollout["metadata"]
        me = claimant_of(str(metadata["name"]), metadata, rollout.get("status") or {})
        claimants = {
            ref: list(claims.get((namespace, ref.kind, ref.name), ()))
            for ref in claimed_objects(spec)
        }
        conflicts = claim_conflicts(me, claimed_objects(spec), claimants)
    return Observations(
        generation=generation,
        missing=tuple(missing),
        conflicts=tuple(conflicts),
        stable=workload(stable),
        candidate=workload(candidate),
        route=route,
        judgement=judgement,
        action=(rollout["metadata"].get("annotations") or {}).get(ACTION_ANNOTATION),
        metrics=tuple(tick.outcome.metrics) if tick else None,
        samples=tick.outcome.samples if tick else None,
        analysis_errors=tick.outcome.errors if tick else None,
        drift=tick.drift if tick else None,
    )


async def _missing_before_start(
    kube: Kube,
    namespace: str,
    spec: ModelRolloutSpec,
    snapshot: Snapshot,
    route_missing: bool,
) -> list[str]:
    """Everything a rollout needs, named, before it moves any traffic."""
    missing = [
        str(ObjectRef("Deployment", name))
        for name, found in (
            (spec.stable.deployment, snapshot.stable),
            (spec.candidate.deployment, snapshot.candidate),
        )
        if found is None
    ]
    for service in (spec.stable.service, spec.candidate.service):
        if service is None:
            continue
        try:
            await kube.call(kube.core.read_namespaced_service, service, namespace)
        except Exception as error:
            if not is_not_found(error):
                raise
            missing.append(str(ObjectRef("Service", service)))
    gate = spec.drift_gate
    reference = gate.reference.config_map_ref if gate else None
    if reference is not None:
        try:
            await kube.call(kube.core.read_namespaced_config_map, reference.name, namespace)
        except Exception as error:
            if not is_not_found(error):
                raise
            missing.append(str(ObjectRef("ConfigMap", reference.name)))
    routing = spec.traffic_routing
    if route_missing and routing.gateway_api is not None:
        missing.append(str(ObjectRef("HTTPRoute", routing.gateway_api.http_route)))
    if route_missing and routing.istio is not None:
        missing.append(str(ObjectRef("VirtualService", routing.istio.virtual_service)))
    return missing


async def _act(
    kube: Kube,
    namespace: str,
    body: kopf.Body,
    spec: ModelRolloutSpec,
    decision: Decision,
    logger: Logger,
) -> None:
    router = router_for(spec, kube, namespace)
    for action in decision.actions:
        if isinstance(action, SetRoute):
            try:
                await router.apply(action.target)
            except RouteProblem as problem:
                logger.warning(f"routing not applied: {problem}")
        elif isinstance(action, Scale):
            await apply_deployment_replicas(kube, namespace, action.deployment, action.replicas)
        elif isinstance(action, EmitEvent):
            kopf.event(body, type=action.type, reason=action.reason, message=action.message)
            log = logger.warning if action.type == "Warning" else logger.info
            log(f"{action.reason}: {action.message}")


async def release(kube: Kube, body: kopf.Body, logger: Logger) -> None:
    """The rollout is being deleted: give all traffic back to the stable if it was
    mid-flight. Missing targets are not an error; there is nothing left to restore.
    The stored status is read afresh, as in `reconcile`: kopf's may lag our last write."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    rollout: Mapping[str, Any] = (
        await _read_own(kube, namespace, name, str(body.metadata.uid)) or body
    )
    status = ModelRolloutStatus.model_validate(dict(rollout.get("status") or {}))
    if status.phase in TERMINAL_PHASES or status.stage == 0:
        return
    try:
        spec = ModelRolloutSpec.model_validate(dict(rollout.get("spec") or {}))
    except ValidationError:
        return
    target = RouteTarget(0, False, 0, status.total_replicas)
    try:
        await router_for(spec, kube, namespace).apply(target)
    except RouteProblem as problem:
        logger.info(f"nothing to restore on deletion: {problem}")
        return
    except Exception as error:
        if not is_not_found(error):
            raise
        logger.info("nothing to restore on deletion: a target is already gone")
        return
    message = f"deleted at stage {status.stage} ({status.weight}%): the stable serves all traffic"
    kopf.event(body, type="Normal", reason="Released", message=message)
    logger.info(message)


def _invalid_spec(
    status: ModelRolloutStatus, generation: int, error: ValidationError, now: datetime
) -> Decision:
    """A spec the API server admitted but we cannot read (an older CRD, say)."""
    problems = "; ".join(
        f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
    )
    message = f"invalid spec: {problems}; no traffic was moved"
    new = status.model_copy(deep=True)
    new.phase, new.message, new.observed_generation = "Failed", message, generation
    new.conditions = kstatus_conditions(
        new.conditions,
        phase="Failed",
        reason="InvalidSpec",
        message=message,
        now=now,
        generation=generation,
    )
    changed = new != status
    actions = (EmitEvent("Warning", "InvalidSpec", message),) if changed else ()
    return Decision(new, actions, INVALID_SPEC_RECHECK_SECONDS, changed=changed)
